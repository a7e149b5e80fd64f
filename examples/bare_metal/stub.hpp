// The stub as this kernel builds it: the library's x86_64::stub_tables (IDT,
// GDT with its TSS descriptor, TSS, LGDT/LIDT images) in the first two pages,
// then one page of trap entry code (stub.S), then the data pages (the stub's
// own variables, asreloc's trap route table, the trap stack). All of it is
// mapped at the same address (the placement) in the guest space, supervisor-
// only, and in the monitor space. stub.S's offsets must agree with this file.
//
//   +0x0000 tables  IDT (read-only); +0x1000 GDT, TSS, register images (writable:
//                   LTR sets the TSS descriptor busy)
//   +0x2000 code    trap entry code, executable, read-only
//   +0x3000 data    stub_data: stub variables, then asreloc::trap_router (route table first)
//   +0x6000 stack   two pages; TSS.RSP0 = placement + 0x8000
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <asreloc/core/address.hpp>
#include <asreloc/core/attributes.hpp>
#include <asreloc/manager/trap_routing.hpp>
#include <asreloc/x86_64/stub_layout.hpp>

namespace bare_metal {

// Read by stub.S at placement + stub_data_offset.
struct stub_data {
    std::uint64_t monitor_cr3;
    std::uint64_t guest_cr3;
    std::uint64_t monitor_entry;  // void (*)(guest_frame*), in the kernel image (monitor space only)
    std::uint64_t monitor_stack;  // top of the monitor's stack for slow-path traps from CPL 3
    // Which vectors the stub answers itself: stub.S reads the route table
    // (vector n at byte 32 n, trap_routing.hpp) and runs the router's
    // dispatch in place for a fast route; every other vector takes the slow
    // path, where the monitor dispatches through the same router.
    alignas(64) asreloc::trap_router router;
};
static_assert(std::is_standard_layout_v<stub_data>);
static_assert(offsetof(stub_data, monitor_stack) == 24 && offsetof(stub_data, router) == 64);

inline constexpr asreloc::x86_64::stub_layout stub_shape{.entry_code_pages = 1, .data_pages = 5};

struct alignas(4096) stub_image {
    asreloc::x86_64::stub_tables tables;
    std::uint8_t code[4096];
    alignas(4096) stub_data data;
    alignas(4096) std::uint8_t stack[2 * 4096];
};
inline constexpr std::uint64_t stub_pages = stub_shape.size() / 4096;
inline constexpr std::uint64_t stub_bytes = stub_shape.size();
inline constexpr std::uint64_t stub_code_offset = stub_shape.entry_code_offset();
inline constexpr std::uint64_t stub_data_offset = stub_shape.data_offset();
inline constexpr std::uint64_t stub_stack_top = stub_bytes;
static_assert(sizeof(stub_image) == stub_bytes);
static_assert(offsetof(stub_image, code) == 0x2000 && offsetof(stub_image, data) == 0x3000);
static_assert(offsetof(stub_image, stack) == 0x6000);

// How each stub page is mapped (guest and monitor space alike; never user).
constexpr asreloc::attributes stub_page_attributes(std::uint64_t page) noexcept {
    if (page == 0) return asreloc::attributes{};                       // IDT
    if (page * 4096 == stub_code_offset) return asreloc::attributes{.executable = true};
    return asreloc::attributes{.writable = true};
}

// What stub.S pushes, lowest address first: the general registers, then
// asreloc::trap_frame (vector, CR2, error code and the CPU's own frame), so
// the route table's handlers get the trap_frame they expect.
struct guest_frame {
    std::uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    asreloc::trap_frame trap;

    bool from_user() const noexcept { return (trap.cs & 3) == 3; }
};
static_assert(offsetof(guest_frame, trap) == 15 * 8 && sizeof(guest_frame) == 23 * 8);

// The guest_frame around a trap_frame a route handler received.
inline guest_frame& frame_of(asreloc::trap_frame& t) noexcept {
    return *reinterpret_cast<guest_frame*>(reinterpret_cast<std::byte*>(&t) - offsetof(guest_frame, trap));
}

// Vectors with an entry in the stub: 0..47 (exceptions, PIC IRQs), 0x80 (the
// fast-path service), 0x81 (the guest's hypercall). Offset of each entry in
// the code page.
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
// stub_dispatch.cpp, in the stub's code.
std::uint8_t stub_route_fast(asreloc::trap_router* router, asreloc::trap_frame* frame) noexcept;
asreloc::trap_disposition stub_fast_service(void*, asreloc::trap_frame& frame) noexcept;
extern const char guest_code_start[], guest_code_end[];          // guest.S (stub_paths)
extern const char demo_guest_start[], demo_guest_end[];          // demo_guest.S (the manager demo)
[[noreturn]] void stub_resume(bare_metal::guest_frame* frame, std::uint64_t stub_exit_address);
}
