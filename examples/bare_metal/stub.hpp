// The stub as this kernel lays it out: five pages that must be mapped in the
// guest space (supervisor-only) and in the monitor space at the same address,
// its placement. stub.S's offsets must agree with stub_layout.
//
//   +0x0000 code   trap entry code (stub.S), supervisor, executable, read-only
//   +0x1000 idt    256 gates, supervisor, read-only
//   +0x2000 gdt    7 descriptors; +0x100 the TSS; +0x200 stub_data (writable:
//                  the CPU sets the TSS busy and descriptor accessed bits)
//   +0x3000 stack  two pages, TSS.RSP0 = placement + 0x5000
#pragma once

#include <cstdint>

#include <asreloc/core/address.hpp>
#include <asreloc/core/attributes.hpp>

#include "cpu.hpp"

namespace bare_metal {

struct stub_layout {
    static constexpr std::uint64_t pages = 5;
    static constexpr std::uint64_t bytes = pages * 4096;
    static constexpr std::uint64_t code = 0x0000, idt = 0x1000, gdt = 0x2000, tss = 0x2100, data = 0x2200;
    static constexpr std::uint64_t stack_bottom = 0x3000, stack_top = 0x5000;
};

// Read by stub.S at placement + stub_layout::data.
struct stub_data {
    std::uint64_t monitor_cr3;
    std::uint64_t guest_cr3;
    std::uint64_t monitor_entry;  // void (*)(trap_frame*), in the kernel image (monitor space only)
    std::uint64_t monitor_stack;  // top of the monitor's stack for slow-path traps from CPL 3
    std::uint64_t fast_traps;     // int 0x80s answered inside the stub
};

// How each stub page is mapped (guest and monitor space alike).
constexpr asreloc::attributes stub_page_attributes(std::uint64_t page) noexcept {
    if (page == 0) return asreloc::attributes{.executable = true};
    if (page == 1) return asreloc::attributes{};
    return asreloc::attributes{.writable = true};
}

// Vectors with an entry in the stub: 0..47 (exceptions, PIC IRQs), 0x80 (fast
// path), 0x81 (the guest's hypercall). Offset of each entry in the code page.
inline constexpr std::uint8_t vector_fast_service = 0x80;
inline constexpr std::uint8_t vector_hypercall = 0x81;
constexpr std::uint64_t stub_entry_offset(unsigned vector) noexcept {
    return 16 * (vector < 48 ? vector : vector == vector_fast_service ? 48 : 49);
}
constexpr bool stub_has_entry(unsigned vector) noexcept {
    return vector < 48 || vector == vector_fast_service || vector == vector_hypercall;
}

}  // namespace bare_metal

extern "C" {
extern const char stub_code_start[], stub_code_end[], stub_entries[], stub_exit[];
extern const char guest_code_start[], guest_code_end[];
[[noreturn]] void stub_resume(bare_metal::trap_frame* frame, std::uint64_t stub_exit_address);
}
