// bare_metal.demo: a monitor built on asreloc's relocation_manager, on a real
// (emulated) CPU. The manager places the stub (monitor.hpp, stub.hpp) in the
// guest space and the monitor space, supervisor-only in the guest; the guest
// (demo_guest.S) runs at CPL 3 and, by design, runs into every case of the
// method: a conflict answered by a move to a free range, a full window that
// forces a victim into the shadow store, reads and writes of displaced
// content emulated against the shadow copy, hops driven by the PIT until the
// placement is cold, fast traps in the stub and slow traps across the switch.
// The run ends with one line of the manager's statistics.
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include <asreloc/core/pcg32.hpp>
#include <asreloc/manager/relocation_manager.hpp>
#include <asreloc/manager/trap_routing.hpp>
#include <asreloc/policy/first_fit_finder.hpp>
#include <asreloc/policy/pool_shadow_store.hpp>
#include <asreloc/policy/random_victim.hpp>
#include <asreloc/policy/trap_count_tracker.hpp>
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

using asreloc::access_kind;
using asreloc::page_size;
using asreloc::virt_addr;
using asreloc::virt_range;

// The guest's modest window: the manager's search window too, so once the
// guest has filled it no free range is left and the stub must take a victim.
constexpr std::uint64_t window_va = 0x10000000;
constexpr std::uint64_t window_pages = 64;
const virt_range guest_window = virt_range::of(virt_addr{window_va}, window_pages * kib4);

constexpr std::uint32_t pit_hz = 1000;
constexpr std::uint32_t hop_period_ticks = 16;  // the placement is judged every 16 ms

// Slot layout of the guest's memory (demo_guest.S).
constexpr std::uint64_t pattern = 0x1e3779b1, tag = 0x1234567, slot_bytes = 512;
constexpr std::uint64_t expected_qword(std::uint64_t va) noexcept {
    const std::uint64_t slot = va & ~(slot_bytes - 1);
    switch (va - slot) {
    case 0: return slot * pattern;
    case 8: return tag;
    case 16: return slot;
    default: return 0;
    }
}

// The manager's trace, on the serial log as it happens.
struct serial_trace {
    std::uint64_t restored = 0, quiet = 0;

    void record(const asreloc::trace_event& e) noexcept {
        using asreloc::trace_kind;
        const serial::hex from{e.from.start().value()}, to{e.to.start().value()};
        switch (e.kind) {
        case trace_kind::placed: serial::line("manager: stub placed at ", to); break;
        case trace_kind::relocated_free:
            serial::line("manager: stub moved ", from, " -> ", to, " (free range)");
            break;
        case trace_kind::relocated_victim:
            serial::line("manager: stub moved ", from, " -> ", to, " over a victim: ", e.count,
                         " guest pages displaced into the shadow store");
            break;
        case trace_kind::conflict:
            serial::line("manager: conflict: the guest needs ", from, ", where the stub was");
            break;
        case trace_kind::hopped: serial::line("manager: hop: placement ", from, " is hot"); break;
        case trace_kind::settled: serial::line("manager: settled: placement ", to, " is cold"); break;
        case trace_kind::resumed: serial::line("manager: placement ", to, " heated up: hopping again"); break;
        case trace_kind::restored:
            restored += e.count;
            serial::line("manager: ", e.count, " displaced pages at ", from, " restored to the guest");
            break;
        case trace_kind::rollback:
            serial::line("manager: operation failed and undone: ", asreloc::to_string(e.code));
            break;
        default: ++quiet; break;  // shadow accesses, guest mappings, reflections: too many to print
        }
    }
};

using finder_type = asreloc::bottom_up_finder;
using victims_type = asreloc::random_victim<asreloc::pcg32>;
using tracker_type = asreloc::trap_count_tracker<64>;
constexpr asreloc::manager_limits limits{.guest_spaces = 1, .stub_pages = stub_pages, .fixups = 8, .pins = 2};
using manager_type = asreloc::relocation_manager<space_type, finder_type, victims_type, asreloc::pool_shadow_store,
                                                 tracker_type, cpu_tlb, asreloc::offset_phys_map, serial_trace, limits>;

// A move displaces at most one stub's worth of pages before the old one's
// come back: two stubs' worth is enough.
constexpr std::size_t shadow_pages = 2 * stub_pages;
alignas(4096) asreloc::page_slot shadow_slots[shadow_pages];
asreloc::shadow_entry shadow_index[shadow_pages];

struct demo_state {
    asreloc::pcg32 rng{0};  // seeded from the boot seed in run_kernel_test
    victims_type victims{rng};
    finder_type finder{};
    asreloc::pool_shadow_store store{shadow_slots, shadow_index};
    tracker_type tracker{};
    manager_type* manager = nullptr;
    asreloc::space_id guest = 0;
    std::uint64_t demand_maps = 0, phase = 0;
};
alignas(demo_state) std::byte demo_storage[sizeof(demo_state)];
alignas(manager_type) std::byte manager_storage[sizeof(manager_type)];
alignas(asreloc::x86_64::stub_fixups) std::byte table_fixups_storage[sizeof(asreloc::x86_64::stub_fixups)];
asreloc::trap_router_fixup_context router_fixup_context{};
demo_state* demo = nullptr;

manager_type& manager() noexcept { return *demo->manager; }

// The monitor follows the manager's placement (the slow path reloads the
// CPU's descriptor registers when it changed).
void follow_placement() noexcept {
    const auto p = manager().placement();
    if (!p.has_value()) fail("the stub has no placement");
    monitor().placement = p->start();
}

template <class What>
void must(const What& r, const char* what) noexcept {
    if (r.has_value()) return;
    serial::line("demo: ", what, " failed: ", asreloc::to_string(r.error_code()));
    fail(what);
}

// --- guest faults --------------------------------------------------------------

void emulate_displaced_access(guest_frame& f) noexcept {
    auto& m = manager();
    const auto fetch = [](std::uint64_t va, std::uint8_t& out) noexcept {
        const auto t = monitor().guest_space->translate(virt_addr{va});
        if (!t.has_value() || !t->page.attrs.user) return false;
        out = *phys_ptr<const std::uint8_t>(t->phys);
        return true;
    };
    const auto read = [&](std::uint64_t va, unsigned n, std::uint64_t& v) noexcept {
        std::byte bytes[8]{};
        if (!m.access_displaced(demo->guest, virt_addr{va}, std::span{bytes, n}, access_kind::read).has_value())
            return false;
        v = 0;
        for (unsigned k = 0; k < n; ++k) v |= std::uint64_t{static_cast<std::uint8_t>(bytes[k])} << (8 * k);
        return true;
    };
    const auto write = [&](std::uint64_t va, unsigned n, std::uint64_t v) noexcept {
        std::byte bytes[8];
        for (unsigned k = 0; k < n; ++k) bytes[k] = static_cast<std::byte>(v >> (8 * k));
        return m.access_displaced(demo->guest, virt_addr{va}, std::span{bytes, n}, access_kind::write).has_value();
    };
    const auto r = emulate_mov(f, f.trap.rip, f.trap.rsp, f.trap.fault_address, fetch, read, write);
    if (r != emulation::done) {
        serial::line("demo: cannot emulate the guest access at ", serial::hex{f.trap.fault_address}, " (rip ",
                     serial::hex{f.trap.rip}, "), reason ", static_cast<unsigned>(r));
        fail("displaced access not emulated");
    }
}

void handle_guest_fault(guest_frame& f) noexcept {
    const virt_addr va{f.trap.fault_address};
    const std::uint64_t error = f.trap.error_code;
    const access_kind kind = (error & 0x10) ? access_kind::execute : (error & 2) ? access_kind::write : access_kind::read;
    const auto action = manager().handle_fault(demo->guest, va, kind);
    must(action, "handle_fault");
    switch (*action) {
    case asreloc::fault_action::retry: follow_placement(); return;
    case asreloc::fault_action::emulate: emulate_displaced_access(f); return;
    case asreloc::fault_action::reflect: break;
    }
    // Not the stub's business: the guest's own fault. This guest has no
    // handler; the monitor backs its window on first touch instead, as a
    // hypervisor backs guest RAM, through the manager (a guest mapping event).
    if (guest_window.contains(va) && (error & 1) == 0) {
        const auto page = virt_range::of(va.align_down(page_size::size_4k), kib4);
        must(manager().guest_map(demo->guest, page, zeroed_frame(), asreloc::user_read_write, page_size::size_4k),
             "guest_map");
        ++demo->demand_maps;
        follow_placement();
        return;
    }
    serial::line("demo: guest #PF not ours: cr2=", serial::hex{va.value()}, " error=", serial::hex{error}, " rip=",
                 serial::hex{f.trap.rip});
    fail("unexpected guest page fault");
}

// --- the end of the run ------------------------------------------------------------

// The monitor's own look at the guest's memory, through the manager (shadow
// store for displaced pages, the guest's mappings elsewhere). Returns the
// number of qwords that differ from what the guest wrote; `sum` as the guest
// computes its checksum.
std::uint64_t check_guest_memory(std::uint64_t& sum) noexcept {
    std::uint64_t bad = 0;
    sum = 0;
    for (std::uint64_t va = window_va; va < window_va + window_pages * kib4; va += 8) {
        std::byte bytes[8];
        if (!manager().access_displaced(demo->guest, virt_addr{va}, bytes, access_kind::read).has_value()) {
            ++bad;
            continue;
        }
        std::uint64_t v = 0;
        for (unsigned k = 0; k < 8; ++k) v |= std::uint64_t{static_cast<std::uint8_t>(bytes[k])} << (8 * k);
        sum += v;
        if (v != expected_qword(va)) ++bad;
    }
    return bad;
}

[[noreturn]] void report(const guest_frame& f) noexcept {
    stop_timer();
    // The counters as the guest's run left them (the check below reads
    // through the manager too).
    const asreloc::statistics s = manager().stats();
    std::uint64_t monitor_sum = 0;
    const std::uint64_t monitor_bad = check_guest_memory(monitor_sum);
    const std::uint64_t guest_errors = f.rsi, guest_sum = f.rdx;
    const bool memory_ok = guest_errors == 0 && monitor_bad == 0 && guest_sum == monitor_sum;
    const std::uint64_t shadow_accesses = s.shadow_reads + s.shadow_writes;

    serial::line("demo: guest reported errors=", guest_errors, " checksum=", serial::hex{guest_sum},
                 "; monitor check: mismatches=", monitor_bad, " checksum=", serial::hex{monitor_sum});
    serial::line("demo: cases: conflict->free=", s.conflicts_into_free, " conflict->victim=",
                 s.conflicts_over_victim, " shadow_reads=", s.shadow_reads, " shadow_writes=", s.shadow_writes,
                 " hops=", s.hops, " settled=", s.settled, " ticks=", s.ticks, " pages_displaced=", s.pages_displaced,
                 " pages_restored=", s.pages_restored, " demand_maps=", demo->demand_maps, " rollbacks=", s.rollbacks);
    serial::line("asreloc-demo: conflicts=", s.conflicts, " free_relocations=", s.free_relocations,
                 " victim_relocations=", s.victim_relocations, " shadow_accesses=", shadow_accesses, " hops=", s.hops,
                 " fast_traps=", s.fast_traps, " slow_traps=", s.slow_traps,
                 " guest_memory=", memory_ok ? "ok" : "bad");

    // Each case must have happened for its own reason, not just be counted.
    const char* missing = nullptr;
    if (s.conflicts_into_free == 0) missing = "case 1: no conflict ended in a free relocation";
    else if (s.conflicts_over_victim == 0) missing = "case 2: no conflict ended over a victim";
    else if (s.shadow_reads == 0 || s.shadow_writes == 0) missing = "case 3: displaced content not both read and written";
    else if (s.hops == 0) missing = "case 4: the timer never made the stub hop";
    else if (s.settled == 0) missing = "case 4: hopping never settled on a cold placement";
    else if (s.fast_traps == 0 || s.slow_traps == 0) missing = "case 5: fast or slow traps missing";
    else if (!memory_ok) missing = "the guest's memory is not what it wrote";
    else if (demo->phase != 7) missing = "the guest did not reach its checksum phase";
    if (missing != nullptr) fail(missing);
    serial::line("demo: PASS (", window_pages, "-page guest window, ", stub_pages, "-page stub, PIT at ", pit_hz,
                 " Hz, hop period ", hop_period_ticks, " ticks)");
    qemu_exit(exit_code::pass);
}

// --- hypercalls and the timer -------------------------------------------------------

const char* phase_name(std::uint64_t phase) noexcept {
    switch (phase) {
    case 1: return "fast path: int 0x80 answered inside the stub";
    case 2: return "timer: ticks arrive as slow-path traps";
    case 3: return "conflict: the guest writes where the stub sits";
    case 4: return "fill: the guest writes its whole window";
    case 5: return "read-back: displaced content served from the shadow store";
    case 6: return "hot range: the guest works where the stub sits, ticks make it hop";
    case 7: return "checksum: the guest checks all of its memory";
    default: return "?";
    }
}

void handle_hypercall(guest_frame& f) noexcept {
    switch (f.rdi) {
    case 0: report(f);
    case 1: f.rax = manager().stats().ticks; return;
    case 2:
        demo->phase = f.rsi;
        serial::line("demo: guest phase ", f.rsi, ": ", phase_name(f.rsi));
        return;
    case 3: f.rax = monitor().placement.value(); return;
    default: fail("unknown hypercall");
    }
}

void handle_tick() noexcept {
    end_of_interrupt();
    const auto r = manager().tick();
    // A failed hop changed nothing and is tried again next period.
    if (!r.has_value()) serial::line("demo: hop failed: ", asreloc::to_string(r.error_code()));
    follow_placement();
}

asreloc::trap_disposition slow_trap(void*, asreloc::trap_frame& t) noexcept {
    guest_frame& f = frame_of(t);
    switch (t.vector) {
    case vector_timer: handle_tick(); break;
    case vector_page_fault: handle_guest_fault(f); break;
    case vector_hypercall: handle_hypercall(f); break;
    default: fail("a slow route without a case");
    }
    return asreloc::trap_disposition::resume_guest;
}

}  // namespace

void run_kernel_test(const physical_layout& layout, std::uint64_t seed) noexcept {
    serial::line("demo: seed=", seed);
    auto& m = create_monitor(layout, demo_guest_start, demo_guest_end);
    demo = new (demo_storage) demo_state{};
    demo->rng.seed_with(seed);

    // The stub's content is built for the address the monitor writes it at
    // (the kernel image); the manager's fixups take it from there.
    const virt_addr built_for{reinterpret_cast<std::uint64_t>(&stub())};
    static constexpr std::uint8_t slow[] = {vector_page_fault, vector_timer, vector_hypercall};
    build_stub(built_for, slow, sizeof(slow), &slow_trap, nullptr);

    asreloc::manager_config config{};
    config.window = guest_window;
    config.hop_period = hop_period_ticks;
    config.settle_periods = 2;
    auto* mgr = new (manager_storage) manager_type(*m.monitor_space, demo->finder, demo->victims, demo->store,
                                                   demo->tracker, m.tlb, direct_map(), config);
    demo->manager = mgr;
    const auto guest = mgr->add_guest_space(*m.guest_space);
    must(guest, "add_guest_space");
    demo->guest = *guest;
    auto* tables = new (table_fixups_storage) asreloc::x86_64::stub_fixups(stub().tables, stub_bytes);
    const auto table_list = tables->list();
    must(mgr->add_fixups(table_list), "add_fixups");
    router_fixup_context = {&stub().data.router, stub_bytes};
    must(mgr->add_fixup(asreloc::trap_router_fixup(router_fixup_context)), "add_fixup");
    mgr->attach_router(&stub().data.router);

    asreloc::stub_page pages[stub_pages];
    for (std::uint64_t p = 0; p < stub_pages; ++p) pages[p] = {stub_frame(p), stub_page_attributes(p)};
    must(mgr->place(asreloc::stub_description{pages, built_for}), "place");
    follow_placement();

    write_cr3(m.monitor_space->root().value());
    load_stub_registers();
    serial::line("demo: monitor space ", serial::hex{m.monitor_space->root().value()}, ", guest space ",
                 serial::hex{m.guest_space->root().value()}, ", stub of ", stub_pages, " pages at ",
                 serial::hex{m.placement.value()}, " (supervisor-only in the guest space), guest window ",
                 serial::hex{window_va}, "+", window_pages, " pages");
    start_timer(pit_hz);
    enter_guest(window_va, window_pages, stub_bytes);
}

}  // namespace bare_metal
