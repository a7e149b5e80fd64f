// Physical memory as the kernel sees it: the direct map the boot code set up,
// and the usable RAM the Multiboot memory map reports, split into a tagged
// data area (the frames the tests map) and a frame pool (page-table pages).
#pragma once

#include <cstdint>

#include <asreloc/core/address.hpp>
#include <asreloc/paging/phys_map.hpp>

namespace bare_metal {

// Physical memory appears at this offset in every space the kernel runs in
// (PML4 slot 256; canonical in 4-level and 5-level paging alike).
inline constexpr std::uint64_t direct_map_base = 0xffff800000000000;
inline constexpr std::uint64_t kernel_base = 0xffffffff80000000;

struct physical_layout {
    asreloc::phys_addr ram_end;      // end of the highest usable RAM (what the direct map must cover)
    asreloc::phys_addr region_start; // the usable region the kernel was loaded into
    asreloc::phys_addr region_end;
    asreloc::phys_addr kernel_end;   // first byte after the kernel image (bss included)
};

// Reads the Multiboot 1 memory map; fails the run when there is none.
physical_layout read_memory_map(std::uint32_t multiboot_info_phys) noexcept;

// The value of "seed=N" on the kernel command line (QEMU -append), if any.
struct boot_seed {
    bool given;
    std::uint64_t value;
};
boot_seed read_boot_seed(std::uint32_t multiboot_info_phys) noexcept;

// One object with static storage: a space may keep a reference to its map.
inline constexpr asreloc::offset_phys_map physical_memory{direct_map_base};
inline const asreloc::offset_phys_map& direct_map() noexcept { return physical_memory; }

template <class T>
T* phys_ptr(asreloc::phys_addr p) noexcept {
    return reinterpret_cast<T*>(direct_map().to_virt(p));
}

}  // namespace bare_metal
