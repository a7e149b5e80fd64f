// bare_metal.stub_paths: the stub's mechanics without the manager. A guest
// space and a monitor space built by the x86-64 backend (monitor.hpp), the
// stub mapped supervisor-only in both, a CPL 3 guest (guest.S), a PIT timer,
// fast traps answered in the stub, slow traps through the monitor space and
// back, demand-mapped guest memory, the guest's touch of the stub classified
// as a conflict, and two moves done by hand with the library's fixups: to a
// gap above the guest's window, then over guest pages whose content is copied
// aside and served to the guest through MOV emulation. The manager's demo
// (demo.cpp) makes the same moves by the library's decisions.
#include <cstddef>
#include <cstdint>
#include <new>

#include <asreloc/manager/fixup.hpp>
#include <asreloc/manager/trap_routing.hpp>
#include <asreloc/paging/page_table.hpp>
#include <asreloc/x86_64/stub_layout.hpp>

#include "emulate.hpp"
#include "kernel.hpp"
#include "monitor.hpp"
#include "pic_pit.hpp"
#include "serial.hpp"
#include "stub.hpp"
#include "tests.hpp"

namespace bare_metal {
namespace {

using asreloc::page_size;
using asreloc::phys_addr;
using asreloc::virt_addr;
using asreloc::virt_range;

// The guest's modest data window, which it fills.
constexpr std::uint64_t guest_window_va = 0x10000000;
constexpr std::uint64_t guest_window_pages = 64;
const virt_range guest_window = virt_range::of(virt_addr{guest_window_va}, guest_window_pages * kib4);

struct paths_state {
    std::uint64_t ticks = 0, demand_maps = 0, conflicts = 0, shadow_accesses = 0;
    std::uint64_t phase = 0;
    std::uint64_t relocations = 0;
};
paths_state paths;

// Without the manager: guest pages displaced by hand, and their copies.
struct hand_shadow {
    static constexpr unsigned pages = stub_pages;
    virt_addr first;  // guest address of the first displaced page
    unsigned count = 0;
    std::uint8_t content[pages][4096];

    bool covers(virt_addr va) const noexcept { return count != 0 && va >= first && va - first < count * 4096ull; }
    std::uint8_t* at(virt_addr va) noexcept { return &content[(va - first) / 4096][(va - first) % 4096]; }
};
hand_shadow shadow;

// What points into the stub: the library's fixups for the x86-64 tables and
// for the route table (its fast handler lies in the stub's code page).
asreloc::x86_64::stub_fixups* table_fixups = nullptr;
alignas(asreloc::x86_64::stub_fixups) std::byte table_fixups_storage[sizeof(asreloc::x86_64::stub_fixups)];
asreloc::trap_router_fixup_context router_fixup_context{};

[[noreturn]] void report_guest_done(const guest_frame& f) noexcept {
    stop_timer();
    const auto fast = fast_traps();
    serial::line("demo-paths: fast_traps=", fast, " slow_traps=", slow_traps(), " ticks=", paths.ticks,
                 " demand_maps=", paths.demand_maps, " conflicts=", paths.conflicts, " hand_relocations=",
                 paths.relocations, " shadow_accesses=", paths.shadow_accesses, " guest_errors=", f.rsi,
                 " guest_phase=", paths.phase);
    // Each displaced page holds 8 slots; the read-back does 2 reads, 1 write and 1 read in each.
    const bool ok = fast == 16 && paths.ticks >= 8 && paths.phase == 4 && f.rsi == 0 && paths.conflicts == 1 &&
                    paths.relocations == 2 && paths.demand_maps == guest_window_pages &&
                    paths.shadow_accesses == hand_shadow::pages * 8 * 4;
    if (!ok) fail("the stub paths did not behave as expected");
    serial::line("demo-paths: PASS (placement by hand; the manager's decisions are bare_metal.demo)");
    qemu_exit(exit_code::pass);
}

void unmap_stub(space_type& s, virt_addr at, bool loaded) noexcept {
    const auto r = s.unmap(virt_range::of(at, stub_bytes));
    if (!r.has_value()) fail("cannot unmap the stub");
    if (loaded) r->apply(monitor().tlb);
    else r->ignore();  // the guest space is not in CR3; entering it reloads CR3
}

// Moves the stub by hand, the way the manager does: map the new placement in
// both spaces, run the fixups, unmap the old placement. The monitor's slow
// path reloads the CPU's descriptor registers and resumes at the new place.
void move_stub(virt_addr to) noexcept {
    auto& m = monitor();
    const virt_addr from = m.placement;
    map_stub(*m.monitor_space, to);
    map_stub(*m.guest_space, to);
    for (const auto& fx : table_fixups->list())
        if (!fx(from, to).has_value()) fail("a stub fixup refused");
    if (!asreloc::trap_router_fixup(router_fixup_context)(from, to).has_value()) fail("the router fixup refused");
    m.placement = to;
    unmap_stub(*m.monitor_space, from, true);
    unmap_stub(*m.guest_space, from, false);
    ++paths.relocations;
}

// Without the manager: the first free range above the guest's window (a gap
// in the guest space, found by the backend's gap walk).
virt_addr free_range_above_window() noexcept {
    const auto search = virt_range::of(guest_window.end(), 256 * kib4);
    virt_addr found{};
    const auto r =
        monitor().guest_space->for_each_gap(search, asreloc::walk_order::bottom_up, [&](const virt_range& g) noexcept {
            if (g.size() < stub_bytes) return asreloc::walk_control::proceed;
            found = g.start();
            return asreloc::walk_control::stop;
        });
    if (!r.has_value() || found == virt_addr{}) fail("no free range for the stub");
    return found;
}

void handle_conflict(guest_frame& f) noexcept {
    ++paths.conflicts;
    serial::line("demo: conflict: guest ", (f.trap.error_code & 2) ? "write" : "read", " at ",
                 serial::hex{f.trap.fault_address}, " hits the stub at ", serial::hex{monitor().placement.value()},
                 " (error ", serial::hex{f.trap.error_code}, ", rip ", serial::hex{f.trap.rip}, ")");
    if ((f.trap.error_code & 0x5) != 0x5) fail("a conflict must be a user-mode protection fault");
    const virt_addr to = free_range_above_window();
    move_stub(to);
    serial::line("demo: stub moved by hand to ", serial::hex{to.value()}, "; the guest retries");
}

// A guest access to content the stub displaced: emulated against the copy.
void serve_from_shadow(guest_frame& f) noexcept {
    const auto fetch = [](std::uint64_t va, std::uint8_t& out) noexcept {
        const auto t = monitor().guest_space->translate(virt_addr{va});
        if (!t.has_value() || !t->page.attrs.user) return false;
        out = *phys_ptr<const std::uint8_t>(t->phys);
        return true;
    };
    const auto in_page = [](std::uint64_t va, unsigned n) noexcept {
        return shadow.covers(virt_addr{va}) && (va % 4096) + n <= 4096;
    };
    const auto read = [&](std::uint64_t va, unsigned n, std::uint64_t& v) noexcept {
        if (!in_page(va, n)) return false;
        v = 0;
        for (unsigned k = 0; k < n; ++k) v |= std::uint64_t{shadow.at(virt_addr{va + k})[0]} << (8 * k);
        return true;
    };
    const auto write = [&](std::uint64_t va, unsigned n, std::uint64_t v) noexcept {
        if (!in_page(va, n)) return false;
        for (unsigned k = 0; k < n; ++k) shadow.at(virt_addr{va + k})[0] = static_cast<std::uint8_t>(v >> (8 * k));
        return true;
    };
    const auto r = emulate_mov(f, f.trap.rip, f.trap.rsp, f.trap.fault_address, fetch, read, write);
    if (r != emulation::done) {
        serial::line("demo: cannot emulate the guest access at ", serial::hex{f.trap.fault_address}, " (rip ",
                     serial::hex{f.trap.rip}, "), reason ", static_cast<unsigned>(r));
        fail("shadow access not emulated");
    }
    ++paths.shadow_accesses;
}

// Without the manager: the stub displaces guest pages by hand (copy aside,
// unmap, move the stub there), as the manager does with a victim.
void displace_onto_victim(virt_addr victim) noexcept {
    auto& guest = *monitor().guest_space;
    shadow.first = victim;
    shadow.count = 0;
    for (unsigned p = 0; p < hand_shadow::pages; ++p) {
        const virt_addr va = victim + p * kib4;
        const auto t = guest.translate(va);
        if (!t.has_value()) fail("the victim range is not all guest memory");
        const auto* src = phys_ptr<const std::uint8_t>(t->phys);
        for (unsigned k = 0; k < kib4; ++k) shadow.content[p][k] = src[k];
        const auto u = guest.unmap(virt_range::of(va, kib4));
        if (!u.has_value()) fail("cannot unmap a victim page");
        u->ignore();  // the guest space is not in CR3
        ++shadow.count;
    }
    move_stub(victim);
    serial::line("demo: stub displaced guest pages ", serial::hex{victim.value()}, "-",
                 serial::hex{victim.value() + stub_bytes - 1}, " by hand; their content is in the shadow copy");
}

void handle_guest_fault(guest_frame& f) noexcept {
    const virt_addr va{f.trap.fault_address};
    const auto stub_range = virt_range::of(monitor().placement, stub_bytes);
    if (stub_range.contains(va) && shadow.covers(va)) return serve_from_shadow(f);
    if (stub_range.contains(va)) return handle_conflict(f);
    if (guest_window.contains(va) && (f.trap.error_code & 1) == 0) {
        // Guest memory is provided on first touch, as a hypervisor backs guest RAM.
        map_or_fail(*monitor().guest_space, virt_range::of(va.align_down(page_size::size_4k), kib4), zeroed_frame(),
                    asreloc::user_read_write, page_size::size_4k, "guest memory");
        ++paths.demand_maps;
        return;
    }
    serial::line("demo: guest #PF not ours: cr2=", serial::hex{va.value()}, " error=", serial::hex{f.trap.error_code},
                 " rip=", serial::hex{f.trap.rip});
    fail("unexpected guest page fault");
}

void handle_hypercall(guest_frame& f) noexcept {
    switch (f.rdi) {
    case 0: report_guest_done(f);
    case 1: f.rax = paths.ticks; return;
    case 2:
        paths.phase = f.rsi;
        serial::line("demo: guest phase ", f.rsi);
        // The window is full: the stub goes over guest pages, which the
        // guest's read-back will then find displaced.
        if (f.rsi == 4) displace_onto_victim(virt_addr{guest_window_va + 8 * kib4});
        return;
    default: fail("unknown hypercall");
    }
}

// The route of every slow vector.
asreloc::trap_disposition slow_trap(void*, asreloc::trap_frame& t) noexcept {
    guest_frame& f = frame_of(t);
    switch (t.vector) {
    case vector_timer:
        ++paths.ticks;
        end_of_interrupt();
        break;
    case vector_page_fault: handle_guest_fault(f); break;
    case vector_hypercall: handle_hypercall(f); break;
    default: fail("a slow route without a case");
    }
    return asreloc::trap_disposition::resume_guest;
}

}  // namespace

void run_kernel_test(const physical_layout& layout, std::uint64_t seed) noexcept {
    serial::line("demo: seed=", seed);
    auto& m = create_monitor(layout, guest_code_start, guest_code_end);

    // Without the manager the placement is fixed inside the guest's window,
    // where the guest will run into it.
    const virt_addr at{guest_window_va + 40 * kib4};
    static constexpr std::uint8_t slow[] = {vector_page_fault, vector_timer, vector_hypercall};
    build_stub(at, slow, sizeof(slow), &slow_trap, nullptr);
    table_fixups = new (table_fixups_storage) asreloc::x86_64::stub_fixups(stub().tables, stub_bytes);
    router_fixup_context = {&stub().data.router, stub_bytes};
    map_stub(*m.monitor_space, at);
    map_stub(*m.guest_space, at);

    write_cr3(m.monitor_space->root().value());
    load_stub_registers();
    serial::line("demo: monitor space ", serial::hex{m.monitor_space->root().value()}, ", guest space ",
                 serial::hex{m.guest_space->root().value()}, ", stub at ", serial::hex{at.value()}, " (", stub_pages,
                 " pages, supervisor-only in the guest space)");
    start_timer(1000);
    enter_guest(guest_window_va, guest_window_pages);
}

}  // namespace bare_metal
