// The monitor's mechanics shared by the demo kernels: the two address spaces
// (built by the x86-64 backend), the stub's content and its mappings, the
// CPU's descriptor registers, the guest's code and stack, and the slow path
// every non-fast trap ends in. Who decides where the stub goes (the manager,
// or stub_paths.cpp by hand) is up to the kernel built on top.
#pragma once

#include <cstdint>

#include <asreloc/core/address.hpp>
#include <asreloc/core/attributes.hpp>
#include <asreloc/paging/frame_pool.hpp>
#include <asreloc/paging/phys_map.hpp>
#include <asreloc/x86_64/page_table.hpp>

#include "cpu_tlb.hpp"
#include "memory.hpp"
#include "stub.hpp"

namespace bare_metal {

using pool_type = asreloc::frame_pool<32768>;
using space_type = asreloc::x86_64::page_table<pool_type, asreloc::offset_phys_map>;

inline constexpr std::uint64_t kib4 = 4096;

// The guest's view: its code and stack; its data window is the kernel's choice.
inline constexpr std::uint64_t guest_code_va = 0x400000;
inline constexpr std::uint64_t guest_stack_va = 0x7ff000;

struct monitor_state {
    pool_type* pool = nullptr;
    space_type* monitor_space = nullptr;
    space_type* guest_space = nullptr;
    asreloc::virt_addr placement;  // where the stub is now (both spaces)
    cpu_tlb tlb;                   // for the monitor space, the one loaded while the monitor runs
};

// Builds both spaces: the monitor space with the kernel image and the direct
// map, the guest space with the guest's code [code_begin, code_end) and a
// stack. Nothing of the kernel is mapped in the guest space; the stub is
// mapped by whoever places it.
monitor_state& create_monitor(const physical_layout& layout, const char* code_begin, const char* code_end) noexcept;
monitor_state& monitor() noexcept;

asreloc::phys_addr zeroed_frame() noexcept;
void map_or_fail(space_type& s, asreloc::virt_range r, asreloc::phys_addr pa, asreloc::attributes a,
                 asreloc::page_size ps, const char* what) noexcept;

// The stub as the monitor sees it (through the kernel image), and its frames.
stub_image& stub() noexcept;
asreloc::phys_addr stub_frame(std::uint64_t page) noexcept;

// Writes the stub's content for a stub based at `at`: entry code, a gate per
// entry, GDT/TSS/register images, RSP0, the data stub.S reads, a route table
// with only int 0x80 routed fast (to stub_fast_service) and the vectors in
// `slow` routed to the monitor with `handler`.
void build_stub(asreloc::virt_addr at, const std::uint8_t* slow, unsigned slow_count, asreloc::trap_handler_fn handler,
                void* context) noexcept;

// The stub's pages at `at` in one space, with stub_page_attributes.
void map_stub(space_type& s, asreloc::virt_addr at) noexcept;

// GDTR, IDTR and TR from the stub's register images (the TSS descriptor is
// made available again so LTR accepts it, SDM vol. 3A, 7.2.2). Called with
// the monitor space loaded and the stub mapped where its images point.
void load_stub_registers() noexcept;

// Enters the guest at CPL 3 through the stub's exit (as every later return
// does), with rdi/rsi/rdx as given and interrupts on.
[[noreturn]] void enter_guest(std::uint64_t rdi, std::uint64_t rsi, std::uint64_t rdx = 0) noexcept;

// The slow path: stub.S calls monitor_entry with the frame on the stub's
// stack; the monitor works on the frame through the kernel image (so it stays
// valid while the stub moves), runs the route's handler and returns to the
// guest through the stub's exit at the placement the stub has then. The
// stub's router counts both paths.
std::uint64_t slow_traps() noexcept;
std::uint64_t fast_traps() noexcept;

}  // namespace bare_metal
