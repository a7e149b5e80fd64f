// Multiboot 1 memory map (Multiboot specification 0.6.96, section 3.3).
#include "memory.hpp"

#include "kernel.hpp"
#include "serial.hpp"

namespace bare_metal {
namespace {

struct [[gnu::packed]] multiboot_info {
    std::uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    std::uint32_t syms[4];
    std::uint32_t mmap_length, mmap_addr;
};

struct [[gnu::packed]] mmap_entry {
    std::uint32_t size;
    std::uint64_t base, length;
    std::uint32_t type;  // 1: available RAM
};

constexpr std::uint32_t has_memory_map = 1u << 6;
constexpr std::uint32_t has_command_line = 1u << 2;

}  // namespace

physical_layout read_memory_map(std::uint32_t multiboot_info_phys) noexcept {
    using asreloc::phys_addr;
    const auto* info = phys_ptr<const multiboot_info>(phys_addr{multiboot_info_phys});
    if ((info->flags & has_memory_map) == 0) fail("no Multiboot memory map");

    const phys_addr image_end{reinterpret_cast<std::uint64_t>(kernel_end) - kernel_base};
    physical_layout layout{};
    layout.kernel_end = image_end;
    for (std::uint32_t off = 0; off < info->mmap_length;) {
        const auto* e = phys_ptr<const mmap_entry>(phys_addr{std::uint64_t{info->mmap_addr} + off});
        serial::line("memory: ", serial::hex{e->base}, "-", serial::hex{e->base + e->length}, " type ", e->type);
        if (e->type == 1) {
            const phys_addr start{e->base}, end{e->base + e->length};
            if (end > layout.ram_end) layout.ram_end = end;
            if (start <= image_end && image_end < end) {
                layout.region_start = start;
                layout.region_end = end;
            }
        }
        off += e->size + 4;
    }
    if (layout.region_end == phys_addr{}) fail("the kernel image is not in usable RAM");
    return layout;
}

boot_seed read_boot_seed(std::uint32_t multiboot_info_phys) noexcept {
    using asreloc::phys_addr;
    const auto* info = phys_ptr<const multiboot_info>(phys_addr{multiboot_info_phys});
    if ((info->flags & has_command_line) == 0 || info->cmdline == 0) return {false, 0};
    const char* c = phys_ptr<const char>(phys_addr{info->cmdline});
    for (; *c; ++c) {
        if (c[0] != 's' || c[1] != 'e' || c[2] != 'e' || c[3] != 'd' || c[4] != '=') continue;
        std::uint64_t v = 0;
        bool digits = false;
        for (c += 5; *c >= '0' && *c <= '9'; ++c, digits = true) v = v * 10 + static_cast<std::uint64_t>(*c - '0');
        return {digits, v};
    }
    return {false, 0};
}

}  // namespace bare_metal
