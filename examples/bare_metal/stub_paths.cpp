// The demo's monitor: a guest space and a monitor space built by the x86-64
// backend, the stub (stub.hpp) mapped supervisor-only in both at its
// placement, a CPL 3 guest (guest.S) that runs into the stub, a PIT timer, and
// the slow-path handler every non-fast trap ends in.
//
// Without the manager (include/asreloc/manager/) this kernel runs the paths
// that do not need it: fast traps answered in the stub, slow traps through
// the monitor space and back, timer interrupts, demand-mapped guest memory,
// the guest's touch of the stub classified as a conflict, and one relocation
// done by hand (map, fixups, descriptor registers, unmap) to a gap above the
// guest's window. Choosing placements, victims, the shadow store and hops are
// the manager's.
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include <asreloc/manager/fixup.hpp>
#include <asreloc/paging/frame_pool.hpp>
#include <asreloc/paging/page_table.hpp>
#include <asreloc/x86_64/page_table.hpp>

#include "cpu_tlb.hpp"
#include "emulate.hpp"
#include "kernel.hpp"
#include "memory.hpp"
#include "pic_pit.hpp"
#include "serial.hpp"
#include "stub.hpp"
#include "tests.hpp"

namespace bare_metal {
namespace {

using asreloc::attributes;
using asreloc::page_size;
using asreloc::phys_addr;
using asreloc::virt_addr;
using asreloc::virt_range;

using pool_type = asreloc::frame_pool<32768>;
using space_type = asreloc::x86_64::page_table<pool_type, asreloc::offset_phys_map>;

constexpr std::uint64_t kib4 = 4096;
constexpr std::uint64_t mib2 = std::uint64_t{1} << 21;
constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

// The guest's view: its code, its stack, and a modest data window it fills.
constexpr std::uint64_t guest_code_va = 0x400000;
constexpr std::uint64_t guest_stack_va = 0x7ff000;
constexpr std::uint64_t guest_window_va = 0x10000000;
constexpr std::uint64_t guest_window_pages = 64;
const virt_range guest_window = virt_range::of(virt_addr{guest_window_va}, guest_window_pages * kib4);

struct demo_state {
    pool_type* pool;
    space_type* monitor;
    space_type* guest;
    phys_addr stub_frames[stub_layout::pages];
    virt_addr placement;
    std::uint64_t slow_traps = 0, ticks = 0, demand_maps = 0, conflicts = 0, shadow_accesses = 0;
    std::uint64_t phase = 0;
    std::uint64_t relocations = 0;
    cpu_tlb monitor_tlb;
};

// Without the manager: guest pages displaced by hand, and their copies.
struct hand_shadow {
    static constexpr unsigned pages = stub_layout::pages;
    virt_addr first;  // guest address of the first displaced page
    unsigned count = 0;
    std::uint8_t content[pages][4096];

    bool covers(virt_addr va) const noexcept { return count != 0 && va >= first && va - first < count * 4096ull; }
    std::uint8_t* at(virt_addr va) noexcept { return &content[(va - first) / 4096][(va - first) % 4096]; }
};
hand_shadow shadow;
demo_state* demo = nullptr;

alignas(16) std::uint8_t monitor_stack[16384];
alignas(pool_type) std::byte pool_storage[sizeof(pool_type)];
alignas(space_type) std::byte monitor_storage[sizeof(space_type)];
alignas(space_type) std::byte guest_storage[sizeof(space_type)];
demo_state state_storage;

template <class T>
T* stub_part(std::uint64_t offset) noexcept {
    return phys_ptr<T>(demo->stub_frames[offset / kib4] + offset % kib4);
}

[[noreturn]] void resume(trap_frame* frame) noexcept {
    stub_resume(frame, demo->placement.value() + static_cast<std::uint64_t>(stub_exit - stub_code_start));
}

extern "C" [[noreturn]] void monitor_entry(trap_frame* frame) noexcept;

// The stub's content for placement `at`: entry code, gates pointing into it,
// GDT with its TSS descriptor, TSS.RSP0 at its stack, the data stub.S reads.
void build_stub(virt_addr at) noexcept {
    const auto code_bytes = static_cast<std::uint64_t>(stub_code_end - stub_code_start);
    if (code_bytes > kib4) fail("the stub code does not fit one page");
    auto* code = stub_part<std::uint8_t>(stub_layout::code);
    for (std::uint64_t k = 0; k < code_bytes; ++k) code[k] = static_cast<std::uint8_t>(stub_code_start[k]);
    auto* idt = stub_part<idt_gate>(stub_layout::idt);
    for (unsigned v = 0; v < 256; ++v) {
        const bool guest_callable = v == vector_fast_service || v == vector_hypercall;
        idt[v] = stub_has_entry(v) ? make_gate(at.value() + stub_layout::code + stub_entry_offset(v), guest_callable ? 3 : 0, 0)
                                   : idt_gate{};
    }
    fill_gdt(*stub_part<std::uint64_t[gdt_entries]>(stub_layout::gdt), at.value() + stub_layout::tss);
    fill_tss(stub_part<void>(stub_layout::tss), at.value() + stub_layout::stack_top, 0);
    auto* data = stub_part<stub_data>(stub_layout::data);
    data->monitor_cr3 = demo->monitor->root().value();
    data->guest_cr3 = demo->guest->root().value();
    data->monitor_entry = reinterpret_cast<std::uint64_t>(&monitor_entry);
    data->monitor_stack = reinterpret_cast<std::uint64_t>(monitor_stack + sizeof(monitor_stack));
    data->fast_traps = 0;
}

// --- fixups: what points into the stub, in the asreloc::fixup form -----------
// Each rewrites one target for a move from `from` to `to`; called again with
// (to, from) it restores the target bit for bit.

asreloc::status fix_idt_gates(void*, virt_addr from, virt_addr to) noexcept {
    auto* idt = stub_part<idt_gate>(stub_layout::idt);
    for (unsigned v = 0; v < 256; ++v) {
        if ((idt[v].type_attributes & 0x80) == 0) continue;
        const auto dpl = static_cast<std::uint8_t>((idt[v].type_attributes >> 5) & 3);
        idt[v] = make_gate(idt[v].offset() - from.value() + to.value(), dpl, idt[v].ist);
    }
    return {};
}

asreloc::status fix_tss_descriptor(void*, virt_addr from, virt_addr to) noexcept {
    auto& gdt = *stub_part<std::uint64_t[gdt_entries]>(stub_layout::gdt);
    const std::uint64_t base = ((gdt[5] >> 16) & 0xffffff) | (((gdt[5] >> 56) & 0xff) << 24) | (gdt[6] << 32);
    const std::uint64_t moved = base - from.value() + to.value();
    gdt[5] = (gdt[5] & 0x00ffff000000ffff) | ((moved & 0xffffff) << 16) | (((moved >> 24) & 0xff) << 56);
    gdt[6] = moved >> 32;
    return {};
}

asreloc::status fix_tss_rsp0(void*, virt_addr from, virt_addr to) noexcept {
    // RSP0 sits at offset 4 of the TSS, unaligned: go through bytes.
    auto* rsp0 = stub_part<std::uint8_t>(stub_layout::tss + 4);
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v |= std::uint64_t{rsp0[k]} << (8 * k);
    v = v - from.value() + to.value();
    for (int k = 0; k < 8; ++k) rsp0[k] = static_cast<std::uint8_t>(v >> (8 * k));
    return {};
}

// The CPU's own copies (GDTR, IDTR, the TSS base cached in TR) follow once the
// new placement is mapped: the TSS descriptor is marked available again so
// ltr accepts it (SDM vol. 3A, 7.2.2).
void reload_descriptor_registers(virt_addr at) noexcept {
    auto& gdt = *stub_part<std::uint64_t[gdt_entries]>(stub_layout::gdt);
    gdt[5] &= ~(std::uint64_t{0x2} << 40);  // busy -> available
    load_descriptor_tables(at.value() + stub_layout::gdt, at.value() + stub_layout::idt);
}

const asreloc::fixup stub_fixups[] = {
    {&fix_idt_gates, nullptr},
    {&fix_tss_descriptor, nullptr},
    {&fix_tss_rsp0, nullptr},
};

void map_or_fail(space_type& s, virt_range r, phys_addr pa, attributes a, page_size ps, const char* what) noexcept {
    const auto m = s.map(r, pa, a, ps);
    if (!m.has_value()) {
        serial::line("demo: mapping ", what, " failed: ", asreloc::to_string(m.error_code()));
        fail("cannot build the demo spaces");
    }
    m->ignore();  // built before either space is loaded, or only not-present entries filled
}

void map_stub(space_type& s, virt_addr at) noexcept {
    for (std::uint64_t p = 0; p < stub_layout::pages; ++p)
        map_or_fail(s, virt_range::of(at + p * kib4, kib4), demo->stub_frames[p], stub_page_attributes(p),
                    page_size::size_4k, "the stub");
}

phys_addr zeroed_frame() noexcept {
    const auto f = demo->pool->allocate_frame();
    if (!f.has_value()) fail("out of frames");
    auto* q = phys_ptr<std::uint64_t>(*f);
    for (unsigned k = 0; k < kib4 / 8; ++k) q[k] = 0;
    return *f;
}

[[noreturn]] void report_guest_done(const trap_frame& f) noexcept {
    stop_timer();
    const auto* data = stub_part<stub_data>(stub_layout::data);
    serial::line("demo-paths: fast_traps=", data->fast_traps, " slow_traps=", demo->slow_traps, " ticks=", demo->ticks,
                 " demand_maps=", demo->demand_maps, " conflicts=", demo->conflicts, " hand_relocations=",
                 demo->relocations, " shadow_accesses=", demo->shadow_accesses, " guest_errors=", f.rsi,
                 " guest_phase=", demo->phase);
    // Each displaced page holds 8 slots; the read-back does 2 reads, 1 write and 1 read in each.
    const bool ok = data->fast_traps == 16 && demo->ticks >= 8 && demo->phase == 4 && f.rsi == 0 &&
                    demo->conflicts == 1 && demo->relocations == 2 && demo->demand_maps == guest_window_pages &&
                    demo->shadow_accesses == hand_shadow::pages * 8 * 4;
    if (!ok) fail("the stub paths did not behave as expected");
    serial::line("demo-paths: PASS (placement choice, the shadow store and hops need the manager: not integrated)");
    qemu_exit(exit_code::pass);
}

void unmap_stub(space_type& s, virt_addr at, bool loaded) noexcept {
    const auto r = s.unmap(virt_range::of(at, stub_layout::bytes));
    if (!r.has_value()) fail("cannot unmap the stub");
    if (loaded) r->apply(demo->monitor_tlb);
    else r->ignore();  // the guest space is not in CR3; entering it reloads CR3
}

// Moves the stub by hand, the way the manager will: map the new placement in
// both spaces, run the fixups, reload the CPU's descriptor registers, unmap
// the old placement. Returns the trap frame at its new address.
trap_frame* move_stub(trap_frame* frame, virt_addr to) noexcept {
    const virt_addr from = demo->placement;
    map_stub(*demo->monitor, to);
    map_stub(*demo->guest, to);
    for (const auto& fx : stub_fixups)
        if (!fx(from, to).has_value()) fail("a stub fixup refused");
    demo->placement = to;
    reload_descriptor_registers(to);
    unmap_stub(*demo->monitor, from, true);
    unmap_stub(*demo->guest, from, false);
    ++demo->relocations;
    return reinterpret_cast<trap_frame*>(reinterpret_cast<std::uint64_t>(frame) - from.value() + to.value());
}

// Without the manager: the first free range above the guest's window (a gap
// in the guest space, found by the backend's gap walk).
virt_addr free_range_above_window() noexcept {
    const auto search = virt_range::of(guest_window.end(), 256 * kib4);
    virt_addr found{};
    const auto r = demo->guest->for_each_gap(search, asreloc::walk_order::bottom_up, [&](const virt_range& g) noexcept {
        if (g.size() < stub_layout::bytes) return asreloc::walk_control::proceed;
        found = g.start();
        return asreloc::walk_control::stop;
    });
    if (!r.has_value() || found == virt_addr{}) fail("no free range for the stub");
    return found;
}

trap_frame* handle_conflict(trap_frame* frame, std::uint64_t cr2) noexcept {
    ++demo->conflicts;
    serial::line("demo: conflict: guest ", (frame->error_code & 2) ? "write" : "read", " at ", serial::hex{cr2},
                 " hits the stub at ", serial::hex{demo->placement.value()}, " (error ", serial::hex{frame->error_code},
                 ", rip ", serial::hex{frame->rip}, ")");
    if ((frame->error_code & 0x5) != 0x5) fail("a conflict must be a user-mode protection fault");
    const virt_addr to = free_range_above_window();
    frame = move_stub(frame, to);
    serial::line("demo: stub moved by hand to ", serial::hex{to.value()}, "; the guest retries");
    return frame;
}

// A guest access to content the stub displaced: emulated against the copy.
trap_frame* serve_from_shadow(trap_frame* frame, std::uint64_t cr2) noexcept {
    const auto fetch = [](std::uint64_t va, std::uint8_t& out) noexcept {
        const auto t = demo->guest->translate(virt_addr{va});
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
    const auto r = emulate_mov(*frame, cr2, fetch, read, write);
    if (r != emulation::done) {
        serial::line("demo: cannot emulate the guest access at ", serial::hex{cr2}, " (rip ", serial::hex{frame->rip},
                     "), reason ", static_cast<unsigned>(r));
        fail("shadow access not emulated");
    }
    ++demo->shadow_accesses;
    return frame;
}

// Without the manager: the stub displaces guest pages by hand (copy aside,
// unmap, move the stub there), as the manager does with a victim.
trap_frame* displace_onto_victim(trap_frame* frame, virt_addr victim) noexcept {
    shadow.first = victim;
    shadow.count = 0;
    for (unsigned p = 0; p < hand_shadow::pages; ++p) {
        const virt_addr va = victim + p * kib4;
        const auto t = demo->guest->translate(va);
        if (!t.has_value()) fail("the victim range is not all guest memory");
        const auto* src = phys_ptr<const std::uint8_t>(t->phys);
        for (unsigned k = 0; k < kib4; ++k) shadow.content[p][k] = src[k];
        const auto u = demo->guest->unmap(virt_range::of(va, kib4));
        if (!u.has_value()) fail("cannot unmap a victim page");
        u->ignore();  // the guest space is not in CR3
        ++shadow.count;
    }
    frame = move_stub(frame, victim);
    serial::line("demo: stub displaced guest pages ", serial::hex{victim.value()}, "-",
                 serial::hex{victim.value() + stub_layout::bytes - 1}, " by hand; their content is in the shadow copy");
    return frame;
}

trap_frame* handle_guest_fault(trap_frame* frame) noexcept {
    trap_frame& f = *frame;
    const std::uint64_t cr2 = read_cr2();
    const virt_addr va{cr2};
    const auto stub = virt_range::of(demo->placement, stub_layout::bytes);
    if (stub.contains(va) && shadow.covers(va)) return serve_from_shadow(frame, cr2);
    if (stub.contains(va)) return handle_conflict(frame, cr2);
    if (guest_window.contains(va) && (f.error_code & 1) == 0) {
        // Guest memory is provided on first touch, as a hypervisor backs guest RAM.
        map_or_fail(*demo->guest, virt_range::of(va.align_down(page_size::size_4k), kib4), zeroed_frame(),
                    asreloc::user_read_write, page_size::size_4k, "guest memory");
        ++demo->demand_maps;
        return frame;
    }
    serial::line("demo: guest #PF not ours: cr2=", serial::hex{cr2}, " error=", serial::hex{f.error_code}, " rip=",
                 serial::hex{f.rip});
    fail("unexpected guest page fault");
}

trap_frame* handle_hypercall(trap_frame* frame) noexcept {
    trap_frame& f = *frame;
    switch (f.rdi) {
    case 0: report_guest_done(f);
    case 1: f.rax = demo->ticks; return frame;
    case 2:
        demo->phase = f.rsi;
        serial::line("demo: guest phase ", f.rsi);
        // The window is full: the stub goes over guest pages, which the
        // guest's read-back will then find displaced.
        if (f.rsi == 4) return displace_onto_victim(frame, virt_addr{guest_window_va + 8 * kib4});
        return frame;
    default: fail("unknown hypercall");
    }
}

extern "C" [[noreturn]] void monitor_entry(trap_frame* frame) noexcept {
    trap_frame& f = *frame;
    if (!f.from_user()) {
        serial::line("demo: monitor fault: vector=", f.vector, " error=", serial::hex{f.error_code}, " rip=",
                     serial::hex{f.rip}, " cr2=", serial::hex{read_cr2()});
        fail("fault in the monitor");
    }
    ++demo->slow_traps;
    switch (f.vector) {
    case vector_timer:
        ++demo->ticks;
        end_of_interrupt();
        break;
    case vector_page_fault: frame = handle_guest_fault(frame); break;
    case vector_hypercall: frame = handle_hypercall(frame); break;
    default:
        serial::line("demo: guest exception: vector=", f.vector, " error=", serial::hex{f.error_code}, " rip=",
                     serial::hex{f.rip});
        fail("unexpected guest exception");
    }
    resume(frame);
}

}  // namespace

void run_kernel_test(const physical_layout& layout, std::uint64_t seed) noexcept {
    serial::line("demo: seed=", seed);
    demo = new (&state_storage) demo_state{};
    const phys_addr pool_start{align_up(layout.kernel_end.value(), mib2)};
    std::uint64_t frames = (layout.region_end - pool_start) / kib4;
    if (frames > 32768) frames = 32768;
    demo->pool = new (pool_storage) pool_type(pool_start, frames);
    const auto& dm = direct_map();
    const auto mode = (read_cr4() & cr4_la57) ? asreloc::x86_64::paging_mode::five_level
                                              : asreloc::x86_64::paging_mode::four_level;
    auto monitor = space_type::create(*demo->pool, dm, mode);
    auto guest = space_type::create(*demo->pool, dm, mode);
    if (!monitor.has_value() || !guest.has_value()) fail("page_table::create failed");
    demo->monitor = new (monitor_storage) space_type(std::move(monitor).value());
    demo->guest = new (guest_storage) space_type(std::move(guest).value());

    // Monitor space: the kernel image and the direct map; no guest memory.
    map_or_fail(*demo->monitor, virt_range::of(virt_addr{kernel_base}, align_up(layout.kernel_end.value(), mib2)),
                phys_addr{0}, attributes{.writable = true, .executable = true}, page_size::size_2m, "the kernel image");
    map_or_fail(*demo->monitor, virt_range::of(virt_addr{direct_map_base}, align_up(layout.ram_end.value(), mib2)),
                phys_addr{0}, asreloc::read_write, page_size::size_2m, "the direct map");

    // Guest space: its code and stack; the data window is backed on first touch.
    const phys_addr code = zeroed_frame();
    const auto guest_bytes = static_cast<std::uint64_t>(guest_code_end - guest_code_start);
    for (std::uint64_t k = 0; k < guest_bytes; ++k) phys_ptr<char>(code)[k] = guest_code_start[k];
    map_or_fail(*demo->guest, virt_range::of(virt_addr{guest_code_va}, kib4), code,
                attributes{.user = true, .executable = true}, page_size::size_4k, "guest code");
    map_or_fail(*demo->guest, virt_range::of(virt_addr{guest_stack_va}, kib4), zeroed_frame(), asreloc::user_read_write,
                page_size::size_4k, "guest stack");

    // The stub: its frames, placed in both spaces. Without the manager the
    // placement is fixed inside the guest's window, where the guest will run
    // into it.
    for (auto& f : demo->stub_frames) f = zeroed_frame();
    demo->placement = virt_addr{guest_window_va + 40 * kib4};
    build_stub(demo->placement);
    map_stub(*demo->monitor, demo->placement);
    map_stub(*demo->guest, demo->placement);

    write_cr3(demo->monitor->root().value());
    load_descriptor_tables(demo->placement.value() + stub_layout::gdt, demo->placement.value() + stub_layout::idt);
    serial::line("demo: monitor space ", serial::hex{demo->monitor->root().value()}, ", guest space ",
                 serial::hex{demo->guest->root().value()}, ", stub at ", serial::hex{demo->placement.value()}, " (",
                 stub_layout::pages, " pages, supervisor-only in the guest space)");
    start_timer(1000);

    // Enter the guest through the stub's exit, as every later return does.
    auto* frame = reinterpret_cast<trap_frame*>(demo->placement.value() + stub_layout::stack_top - sizeof(trap_frame));
    *frame = trap_frame{};
    frame->rip = guest_code_va;
    frame->cs = user_code;
    frame->rflags = 0x202;  // IF: the timer reaches the guest
    frame->rsp = guest_stack_va + kib4;
    frame->ss = user_data;
    frame->rdi = guest_window_va;
    frame->rsi = guest_window_pages;
    resume(frame);
}

}  // namespace bare_metal
