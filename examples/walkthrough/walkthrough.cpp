// The asreloc walk-through: a monitor keeps its stub (IDT, GDT/TSS, trap entry
// code, their data) inside a guest's address space and moves it out of the
// guest's way, on simulated physical memory, saying what happens at each step
// with the addresses. Read it top to bottom. It doubles as a smoke test: every
// "[ok]" line is checked, and the exit status is 1 if any check fails.
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/manager/relocation_manager.hpp"
#include "asreloc/paging/frame_pool.hpp"
#include "asreloc/paging/phys_map.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/policy/pool_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "asreloc/x86_64/stub_layout.hpp"

namespace {

using namespace asreloc;

// ============================================================================
// Printing and checking
// ============================================================================

std::string hex(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%" PRIx64, v);
    return b;
}
std::string hex(virt_addr a) { return hex(a.value()); }
std::string hex(phys_addr a) { return hex(a.value()); }
// Ranges print as /proc/PID/maps prints them: start-end, end exclusive.
std::string text(virt_range r) { return hex(r.start()) + "-" + hex(r.end()); }
std::string pages(std::uint64_t n) { return std::to_string(n) + (n == 1 ? " page" : " pages"); }

void say(std::string_view line) { std::cout << "   " << line << '\n'; }
void heading(std::string_view title) { std::cout << '\n' << title << '\n'; }

int failed_checks = 0;

// Every claim the walk-through prints is checked here.
bool check(bool ok, std::string_view claim) {
    std::cout << (ok ? "   [ok] " : "   [FAILED] ") << claim << '\n';
    if (!ok) ++failed_checks;
    return ok;
}
template <class T>
bool check_ok(const result<T>& r, std::string_view what) {
    if (r) return true;
    return check(false, std::string(what) + ": " + to_string(r.error_code()));
}

// ============================================================================
// 1. Simulated physical memory
// ============================================================================
//
// A monitor reaches RAM through a direct map; here "RAM" is a host buffer.
// Physical addresses start at 4 GiB, so one is never mistaken for a host
// pointer; offset_phys_map adds the difference. frame_pool hands out the
// frames: page-table pages, the stub's frames and the guest's own frames.

constexpr std::size_t frame_count = 2048;  // 8 MiB
constexpr phys_addr ram_base{0x1'0000'0000};

struct alignas(4096) host_page {
    std::byte bytes[page_bytes];
};

class physical_memory {
public:
    physical_memory()
        : pages_(frame_count), map_(reinterpret_cast<std::uintptr_t>(pages_.data()) - ram_base.value()) {}

    frame_pool<frame_count>& frames() noexcept { return frames_; }
    const frame_pool<frame_count>& frames() const noexcept { return frames_; }
    const offset_phys_map& map() const noexcept { return map_; }
    std::byte* at(phys_addr p) const noexcept { return map_.to_virt(p); }

private:
    std::vector<host_page> pages_;
    frame_pool<frame_count> frames_{ram_base, frame_count};
    offset_phys_map map_;
};

// ============================================================================
// The pieces the manager is built from
// ============================================================================

using frames_t = frame_pool<frame_count>;
// Both the monitor space and the guest space are x86-64 4-level page tables:
// the tables a real CPU would walk from CR3.
using space = x86_64::page_table<frames_t, offset_phys_map>;

// The TLB hook. A real monitor would run invlpg (and shoot down other CPUs);
// this one only remembers what it was asked, so the walk-through can show that
// each relocation ends in one batch of precise invalidations.
struct logging_tlb {
    std::vector<virt_range> asked;
    void invalidate_page(virt_addr va) {
        asked.push_back(virt_range::of(va.align_down(page_size::size_4k), page_bytes));
    }
    void invalidate_range(virt_range r) { asked.push_back(r); }
    void invalidate_all() { asked.push_back(virt_range::everything()); }
};

std::string describe(const trace_event& e);

// The manager reports what it does as trace events; this sink prints them
// (muted while the walk-through does bulk work).
struct printing_trace {
    bool enabled = true;
    void record(const trace_event& e) const {
        if (enabled) std::cout << "      trace: " << describe(e) << '\n';
    }
};

using victims_t = random_victim<pcg32>;  // US 7,020,738: the victim is chosen at random
using tracker_t = trap_count_tracker<64>;
using manager_t = relocation_manager<space, top_down_finder, victims_t, pool_shadow_store, tracker_t, logging_tlb,
                                     offset_phys_map, printing_trace>;

// A fixup is a function and a context. This one wraps another and can be told
// to refuse the next move, to show what a refusal does (step 9). It refuses
// only forward moves: the reverse call of a rollback must always succeed.
struct refusable_fixup {
    fixup inner{};
    bool refuse_next = false;

    static status apply(void* context, virt_addr from, virt_addr to) noexcept {
        auto& self = *static_cast<refusable_fixup*>(context);
        if (self.refuse_next) {
            self.refuse_next = false;
            return failure(error::fixup_refused);
        }
        return self.inner(from, to);
    }
    fixup as_fixup() noexcept { return fixup{&refusable_fixup::apply, this}; }
};

// ============================================================================
// Where things are
// ============================================================================

// The guest's layout, from /proc/PID/maps of `sort -n` on Debian 12 x86-64
// (tests/data/layouts/sort-numbers.t0.maps); the stack is the part the
// program has touched so far: it grows down from 0x7ffc060fe000.
struct guest_region {
    const char* name;
    std::uint64_t start;
    std::uint64_t pages;
    attributes attrs;
};
constexpr attributes user_code{.user = true, .executable = true};
constexpr std::uint64_t stack_bottom = 0x7ffc'060f'0000;
constexpr guest_region guest_layout[] = {
    {"program text", 0x5610'535b'd000, 18, user_code},
    {"program data", 0x5610'535d'6000, 1, user_read_write},
    {"heap", 0x5610'72d8'b000, 33, user_read_write},
    {"libc text", 0x7fd0'1d13'1000, 342, user_code},
    {"libc data", 0x7fd0'1d2d'e000, 2, user_read_write},
    {"ld.so text", 0x7fd0'1d30'3000, 38, user_code},
    {"stack", stack_bottom, 14, user_read_write},
};

// The stub: IDT, GDT + TSS, entry code, data; one 4 KiB page each.
constexpr x86_64::stub_layout stub_shape{};
constexpr std::size_t stub_pages = stub_shape.size() / page_bytes;
// The monitor builds the stub's pointers for this base; place() runs the
// fixups from here to the first placement.
constexpr virt_addr stub_built_for{0xffff'ffff'c000'0000};
constexpr std::uint64_t common_handler = 32 * 16;  // offset in the entry code page

// The search window: where the stub may go. A real monitor gives the manager
// a large one (the whole user half, say); 64 KiB around the bottom of the
// guest's stack lets the guest's own growth fill it in a few steps. Placements
// are aligned to the stub's size, so the window has four slots.
constexpr virt_range window = virt_range::of(virt_addr{stack_bottom - 0xc000}, 0x1'0000);
constexpr std::uint64_t slot_bytes = stub_shape.size();

// The monitor's own code lives in the monitor space only, far above the guest.
constexpr virt_addr monitor_code{0xffff'8000'0000'0000};

manager_config walkthrough_config() {
    return manager_config{.alignment = slot_bytes, .window = window, .hop_period = 4, .settle_periods = 1};
}

// ============================================================================
// The machine: memory, two spaces, the stub, the policies and the manager
// ============================================================================

space new_space(physical_memory& memory) {
    auto s = space::create(memory.frames(), memory.map(), x86_64::paging_mode::four_level);
    if (!s) {
        std::cout << "cannot create a page table: " << to_string(s.error_code()) << '\n';
        std::exit(1);
    }
    return std::move(s).value();
}

struct machine {
    explicit machine(std::uint64_t seed) : rng(seed) {}

    physical_memory memory;
    space monitor = new_space(memory);
    space guest = new_space(memory);
    // The shadow store keeps displaced guest pages in caller storage (no heap
    // inside the library): 16 pages is plenty for a 4-page stub.
    std::array<page_slot, 16> shadow_pages{};
    std::array<shadow_entry, 16> shadow_index{};
    pool_shadow_store store{shadow_pages, shadow_index};
    pcg32 rng;
    victims_t victims{rng};
    tracker_t tracker;
    logging_tlb tlb;
    manager_t manager{monitor, top_down_finder{}, victims, store, tracker, tlb, memory.map(), walkthrough_config()};
    space_id guest_id = 0;

    // The stub, as the monitor built it (step 4).
    std::array<phys_addr, stub_pages> stub_frames{};
    x86_64::stub_tables* tables = nullptr;
    std::optional<x86_64::stub_fixups> builtin_fixups;
    // The monitor's own pointer into the stub: its image of IA32_LSTAR (the
    // SYSCALL entry point), loaded into the MSR on every switch to the guest.
    std::uint64_t lstar = 0;
    refusable_fixup lstar_fixup;

    // What the guest wrote at offset 0 of each of its pages: a label, so that
    // every read can be checked.
    std::map<std::uint64_t, std::string> labels;
};

// ============================================================================
// The guest touches memory: the CPU and the monitor together
// ============================================================================
//
// The guest runs at CPL 3. A user page it maps is accessed directly; anything
// else (not present, or supervisor-only like the stub) raises #PF, and the
// monitor asks the manager what to do: retry (the stub moved away), emulate
// (the bytes are displaced: the instruction emulator reaches them through
// access_displaced), or reflect (the guest's own fault).

enum class touched { directly, emulated, guest_fault };

const char* to_string(touched t) {
    switch (t) {
    case touched::directly: return "directly";
    case touched::emulated: return "by emulation, from the shadow store";
    case touched::guest_fault: return "not at all (a fault for the guest)";
    }
    return "?";
}

bool cpu_allows(const translation& t, access_kind kind) {
    return t.page.attrs.user && (kind != access_kind::write || t.page.attrs.writable);
}

// `data` must not cross a page boundary (the CPU would split the access).
touched guest_access(machine& m, std::uint64_t va, std::span<std::byte> data, access_kind kind) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (auto t = m.guest.translate(virt_addr{va}); t && cpu_allows(*t, kind)) {
            std::byte* frame = m.memory.at(t->phys);
            if (kind == access_kind::write) std::memcpy(frame, data.data(), data.size());
            else std::memcpy(data.data(), frame, data.size());
            return touched::directly;
        }
        auto action = m.manager.handle_fault(m.guest_id, virt_addr{va}, kind);
        if (!action) return touched::guest_fault;
        switch (*action) {
        case fault_action::retry: continue;
        case fault_action::reflect: return touched::guest_fault;
        case fault_action::emulate:
            if (!m.manager.access_displaced(m.guest_id, virt_addr{va}, data, kind)) return touched::guest_fault;
            return touched::emulated;
        }
    }
    return touched::guest_fault;
}

touched guest_read(machine& m, std::uint64_t va, std::string& out, std::size_t n) {
    std::vector<std::byte> bytes(n);
    const touched how = guest_access(m, va, bytes, access_kind::read);
    const auto* chars = reinterpret_cast<const char*>(bytes.data());
    out.assign(chars, std::find(chars, chars + n, '\0'));  // the text up to its terminator
    return how;
}
touched guest_write(machine& m, std::uint64_t va, std::string_view s) {
    std::vector<std::byte> bytes(s.size() + 1);
    std::memcpy(bytes.data(), s.data(), s.size());
    return guest_access(m, va, bytes, access_kind::write);
}
touched guest_read_u64(machine& m, std::uint64_t va, std::uint64_t& v) {
    return guest_access(m, va, std::as_writable_bytes(std::span{&v, 1}), access_kind::read);
}
touched guest_write_u64(machine& m, std::uint64_t va, std::uint64_t v) {
    return guest_access(m, va, std::as_writable_bytes(std::span{&v, 1}), access_kind::write);
}

// The guest maps a fresh page (its own frame, labelled) through the monitor:
// in a shadow-paging monitor every guest page-table write ends up here.
status guest_maps_page(machine& m, std::uint64_t va, const std::string& label, attributes attrs = user_read_write) {
    auto frame = m.memory.frames().allocate_frame();
    if (!frame) return failure(frame.error_code());
    std::byte* bytes = m.memory.at(*frame);
    std::memset(bytes, 0, page_bytes);
    std::memcpy(bytes, label.c_str(), label.size() + 1);
    auto r = m.manager.guest_map(m.guest_id, virt_range::of(virt_addr{va}, page_bytes), *frame, attrs,
                                 page_size::size_4k);
    if (!r) {
        m.memory.frames().deallocate_frame(*frame);
        return r;
    }
    m.labels[va] = label;
    return {};
}

std::string stack_label(std::uint64_t va) {
    return "stack page " + hex(va);
}

// ============================================================================
// Small views of the state
// ============================================================================

virt_range placement(const machine& m) {
    auto p = m.manager.placement();
    return p ? *p : virt_range{};
}

std::uint64_t slot_of(virt_range r) { return (r.start() - window.start()) / slot_bytes; }
std::string where(virt_range r) { return text(r) + " (slot " + std::to_string(slot_of(r)) + " of the window)"; }

std::uint64_t page_fault_gate(const machine& m) { return m.tables->idt_gates[14].offset(); }

// Every pointer the stub holds into itself says the stub's base is `base`:
// the 32 IDT gates, the TSS descriptor, the GDTR/IDTR images, the TSS stacks
// and the monitor's own LSTAR image.
bool stub_pointers_say(const machine& m, virt_addr base) {
    const x86_64::stub_tables& t = *m.tables;
    const std::uint64_t b = base.value();
    for (std::uint64_t v = 0; v < 32; ++v)
        if (t.idt_gates[v].offset() != b + stub_shape.entry_code_offset() + 16 * v) return false;
    const std::uint64_t gdtr = t.gdtr.base, idtr = t.idtr.base;
    const x86_64::task_state_segment tss = t.tss;
    return t.gdt.tss.base() == b + x86_64::stub_tables::tss_offset() &&
           gdtr == b + x86_64::stub_tables::gdt_offset() && idtr == b + x86_64::stub_tables::idt_offset() &&
           tss.rsp[0] == b + stub_shape.size() && tss.ist[0] == b + stub_shape.size() - 2048 &&
           m.lstar == b + stub_shape.entry_code_offset() + common_handler;
}

// The stub's frames are mapped at the placement, supervisor-only in the
// guest space, the same frames in the monitor space.
bool stub_mapped_at(const machine& m, virt_range at) {
    for (std::size_t i = 0; i < stub_pages; ++i) {
        auto g = m.guest.translate(at.start() + i * page_bytes);
        auto s = m.monitor.translate(at.start() + i * page_bytes);
        if (!g || !s || g->phys != m.stub_frames[i] || s->phys != m.stub_frames[i] || g->page.attrs.user) return false;
    }
    return true;
}

void print_tlb(machine& m, std::string_view why_none = "") {
    std::string ranges;
    for (const virt_range& r : m.tlb.asked) ranges += (ranges.empty() ? "" : ", ") + text(r);
    say("TLB invalidations asked for: " + (ranges.empty() ? "none" + std::string(why_none) : ranges));
    m.tlb.asked.clear();
}

std::string describe(const trace_event& e) {
    const std::string in = e.space == no_space ? "" : " in guest space " + std::to_string(e.space);
    switch (e.kind) {
    case trace_kind::placed: return "placed at " + text(e.to);
    case trace_kind::conflict: return "conflict on " + text(e.from) + in;
    case trace_kind::relocated_free: return "relocated " + text(e.from) + " -> " + text(e.to) + " (free range)";
    case trace_kind::relocated_victim:
        return "relocated " + text(e.from) + " -> " + text(e.to) + " (victim, " + pages(e.count) + " displaced)";
    case trace_kind::hopped: return "hopped " + text(e.from) + " -> " + text(e.to);
    case trace_kind::settled: return "settled at " + text(e.to);
    case trace_kind::resumed: return "hopping resumed at " + text(e.to);
    case trace_kind::restored: return pages(e.count) + " restored under " + text(e.from) + in;
    case trace_kind::shadow_read:
        return "shadow read of " + std::to_string(e.count) + " bytes at " + hex(e.from.start());
    case trace_kind::shadow_write:
        return "shadow write of " + std::to_string(e.count) + " bytes at " + hex(e.from.start());
    case trace_kind::reflected: return "fault at " + hex(e.from.start()) + " reflected to the guest";
    case trace_kind::guest_mapped: return "guest mapped " + text(e.from);
    case trace_kind::guest_unmapped: return "guest unmapped " + text(e.from);
    case trace_kind::space_added: return "guest space " + std::to_string(e.space) + " added";
    case trace_kind::space_removed: return "guest space " + std::to_string(e.space) + " removed";
    case trace_kind::rollback: return std::string("rolled back: ") + to_string(e.code);
    }
    return "?";
}

// ============================================================================
// The steps
// ============================================================================

bool step_memory(machine& m) {
    heading("1. Physical memory");
    const phys_addr first = m.memory.frames().base();
    say(std::to_string(frame_count) + " frames of 4 KiB at physical " + hex(first) + "-" +
        hex(first + frame_count * page_bytes) + ": a host buffer, reached through offset_phys_map");
    say("(frames already used: " + std::to_string(m.memory.frames().allocated_count()) +
        ", the two root tables of the spaces below)");
    return true;
}

bool step_spaces(machine& m) {
    heading("2. Two address spaces, built by the x86-64 backend (4-level paging)");
    // The rest of the monitor lives in the monitor space only.
    for (std::uint64_t i = 0; i < 4; ++i) {
        auto frame = m.memory.frames().allocate_frame();
        if (!check_ok(frame, "a frame for the monitor's code")) return false;
        auto code = m.monitor.map(virt_range::of(monitor_code + i * page_bytes, page_bytes), *frame,
                                  attributes{.executable = true}, page_size::size_4k);
        if (!check_ok(code, "map the monitor's code")) return false;
        code->ignore();  // the monitor space is not loaded on any CPU yet
    }
    say("monitor space: root table at phys " + hex(m.monitor.root()) + "; the monitor's code at " +
        text(virt_range::of(monitor_code, 4 * page_bytes)));
    auto id = m.manager.add_guest_space(m.guest);
    if (!check_ok(id, "register the guest space")) return false;
    m.guest_id = *id;
    say("guest space:   root table at phys " + hex(m.guest.root()) + "; registered with the manager as space " +
        std::to_string(m.guest_id));
    return true;
}

bool step_layout(machine& m) {
    heading("3. The guest maps its program (layout of `sort -n`, from /proc/PID/maps)");
    m.manager.trace().enabled = false;  // hundreds of guest_mapped events
    std::uint64_t total = 0;
    for (const guest_region& r : guest_layout) {
        for (std::uint64_t i = 0; i < r.pages; ++i) {
            const std::uint64_t va = r.start + i * page_bytes;
            const std::string label = r.name == std::string_view("stack")
                                          ? stack_label(va)
                                          : std::string(r.name) + " +" + hex(i * page_bytes);
            if (!check_ok(guest_maps_page(m, va, label, r.attrs), "map " + label)) return false;
        }
        total += r.pages;
        const char* perms = r.attrs.executable ? "r-x" : r.attrs.writable ? "rw-" : "r--";
        say(text(virt_range::of(virt_addr{r.start}, r.pages * page_bytes)) + "  " + perms + "  " + pages(r.pages) +
            "  " + r.name);
    }
    m.manager.trace().enabled = true;
    say(std::to_string(total) + " guest pages, each its own frame, labelled at offset 0 with what it is");
    say("the stub may sit in the window " + text(window) + ": four 16 KiB slots; the stack's lowest pages");
    say("fill slot 3, slots 0-2 are free (the stack will grow down into them)");
    return true;
}

// Entry code: 32 entry points of 16 bytes (the IDT gates point at them), each
// `push imm8 <vector>; jmp rel32 <common>`, and a common handler that halts
// (a real monitor's saves the guest's state and switches to the monitor
// space). Relative jumps make the code position independent, so it needs no
// fixup when the stub moves: only the pointers *to* it do.
void write_entry_code(std::byte* page) {
    for (std::uint64_t v = 0; v < 32; ++v) {
        std::byte* e = page + 16 * v;
        e[0] = std::byte{0x6a};  // push imm8
        e[1] = static_cast<std::byte>(v);
        e[2] = std::byte{0xe9};  // jmp rel32, relative to the end of the jmp
        const auto rel = static_cast<std::int32_t>(common_handler - (16 * v + 7));
        std::memcpy(e + 3, &rel, sizeof rel);
    }
    page[common_handler] = std::byte{0xf4};      // hlt
    page[common_handler + 1] = std::byte{0xeb};  // jmp -3: back to the hlt
    page[common_handler + 2] = std::byte{0xfd};
}

void build_tables(machine& m) {
    // The table pages are physically consecutive, so one stub_tables object
    // spans them in the monitor's view of physical memory.
    m.tables = ::new (static_cast<void*>(m.memory.at(m.stub_frames[0]))) x86_64::stub_tables{};
    x86_64::stub_tables& t = *m.tables;
    const std::uint64_t entry = stub_built_for.value() + stub_shape.entry_code_offset();
    for (std::size_t v = 0; v < 32; ++v)
        t.idt_gates[v] = x86_64::idt_gate::make(entry + 16 * v, x86_64::kernel_code_selector,
                                                x86_64::system_type::interrupt_gate);
    t.place(stub_built_for);  // TSS descriptor, GDTR and IDTR images
    t.tss.rsp[0] = stub_built_for.value() + stub_shape.size();  // the ring-0 stack: top of the data page
    t.tss.ist[0] = stub_built_for.value() + stub_shape.size() - 2048;
    m.lstar = entry + common_handler;
}

bool step_stub(machine& m) {
    heading("4. The monitor builds its stub: 4 pages that must be mapped wherever the guest runs");
    for (std::size_t i = 0; i < stub_pages; ++i) {
        auto f = m.memory.frames().allocate_frame();
        if (!check_ok(f, "a stub frame")) return false;
        m.stub_frames[i] = *f;
        std::memset(m.memory.at(*f), 0, page_bytes);
    }
    if (!check(m.stub_frames[1] == m.stub_frames[0] + page_bytes, "the two table frames are consecutive"))
        return false;
    build_tables(m);
    write_entry_code(m.memory.at(m.stub_frames[2]));
    say("page 0  IDT: 32 interrupt gates              frame " + hex(m.stub_frames[0]));
    say("page 1  GDT with its TSS descriptor, the TSS  frame " + hex(m.stub_frames[1]));
    say("page 2  entry code (push vector; jmp common)  frame " + hex(m.stub_frames[2]));
    say("page 3  data: the ring-0 stacks               frame " + hex(m.stub_frames[3]));
    say("its pointers are built for base " + hex(stub_built_for) + ": IDT gate 14 (#PF) -> " +
        hex(page_fault_gate(m)));

    // Everything that points into the stub must follow it: the built-in x86-64
    // fixups (IDT, TSS descriptor, GDTR, IDTR, TSS stacks), then our own.
    m.builtin_fixups.emplace(*m.tables, stub_shape.size());
    const auto builtin = m.builtin_fixups->list();
    m.lstar_fixup.inner = slot_fixup(&m.lstar);
    if (!check_ok(m.manager.add_fixups(builtin), "register the x86-64 fixups")) return false;
    if (!check_ok(m.manager.add_fixup(m.lstar_fixup.as_fixup()), "register the LSTAR fixup")) return false;
    say("fixups registered: the 5 built-in x86-64 ones and one for the monitor's IA32_LSTAR image");
    return true;
}

std::array<stub_page, stub_pages> stub_description_pages(const machine& m) {
    return {stub_page{m.stub_frames[0], read_write}, stub_page{m.stub_frames[1], read_write},
            stub_page{m.stub_frames[2], attributes{.executable = true}}, stub_page{m.stub_frames[3], read_write}};
}

bool step_place(machine& m) {
    heading("5. place(): the stub goes where no space maps anything");
    const auto stub = stub_description_pages(m);
    auto r = m.manager.place(stub_description{stub, stub_built_for});
    if (!check_ok(r, "place the stub")) return false;
    say("the top-down finder chose " + where(r->to) + ", just below the stack");
    auto g = m.guest.translate(r->to.start());
    auto s = m.monitor.translate(r->to.start());
    if (!check_ok(g, "translate in the guest space") || !check_ok(s, "translate in the monitor space")) return false;
    say("guest space:   " + hex(r->to.start()) + " -> phys " + hex(g->phys) +
        (g->page.attrs.writable ? " writable" : "") + (g->page.attrs.user ? " user" : " supervisor-only"));
    say("monitor space: " + hex(r->to.start()) + " -> phys " + hex(s->phys) + " (the same frame)");
    check(stub_mapped_at(m, r->to), "all 4 stub pages are mapped there in both spaces, supervisor-only for the guest");
    say("IDT gate 14 (#PF) now -> " + hex(page_fault_gate(m)) + " (was built for " + hex(stub_built_for) + ")");
    check(stub_pointers_say(m, r->to.start()),
          "the fixups pointed every IDT gate, the TSS, GDTR, IDTR and LSTAR at it");
    print_tlb(m, " (only empty entries were filled: no TLB can hold those)");
    return true;
}

bool step_free_relocation(machine& m) {
    heading("6. The guest's stack grows into the stub: conflict, relocation to a free range");
    const virt_range before = placement(m);
    const std::uint64_t gate_before = page_fault_gate(m);
    const statistics stats_before = m.manager.stats();
    const std::uint64_t va = stack_bottom - page_bytes;
    say("the guest maps its next stack page " + hex(va) + ", inside the stub's placement " + text(before));
    m.tlb.asked.clear();
    if (!check_ok(guest_maps_page(m, va, stack_label(va)), "the guest's mapping")) return false;
    const virt_range after = placement(m);
    const statistics stats = m.manager.stats();
    say("the stub moved " + text(before) + " -> " + where(after));
    say("IDT gate 14 (#PF): " + hex(gate_before) + " -> " + hex(page_fault_gate(m)));
    say("(the CPU holds its own copies of GDTR, IDTR and TR: a real monitor reloads them now, LGDT, LIDT, LTR)");
    check(stats.free_relocations == stats_before.free_relocations + 1 && stats.pages_displaced == 0,
          "it was a free relocation: nothing of the guest's was displaced");
    check(stub_pointers_say(m, after.start()) && stub_mapped_at(m, after),
          "the fixups ran; the stub is mapped at its new place");
    auto t = m.guest.translate(virt_addr{va});
    const bool own_frame = t && std::string(reinterpret_cast<const char*>(m.memory.at(t->phys))) == stack_label(va);
    check(own_frame && t->page.attrs.user, "the guest's new stack page is mapped where it asked, to its own frame");
    print_tlb(m);
    return true;
}

bool step_victim_relocation(machine& m) {
    heading("7. The guest fills the window: the next conflict displaces a random victim");
    m.manager.trace().enabled = false;
    // The stack grows to the bottom of slot 2, and an anonymous mmap takes slot 0.
    for (std::uint64_t va = stack_bottom - 2 * page_bytes; va >= stack_bottom - slot_bytes; va -= page_bytes)
        if (!check_ok(guest_maps_page(m, va, stack_label(va)), "a stack page")) return false;
    for (std::uint64_t i = 0; i < 4; ++i) {
        const std::uint64_t va = window.start().value() + i * page_bytes;
        if (!check_ok(guest_maps_page(m, va, "mmap buffer +" + hex(i * page_bytes)), "a buffer page")) return false;
    }
    m.manager.trace().enabled = true;
    say("the stack grew to " + hex(stack_bottom - slot_bytes) + " and the guest mmapped 16 KiB at " +
        hex(window.start()) + ":");
    say("every slot but the stub's own now holds guest pages");

    const virt_range before = placement(m);
    const std::uint64_t va = stack_bottom - slot_bytes - page_bytes;
    say("the stack grows again, to " + hex(va) + ", inside the stub's placement " + text(before));
    m.tlb.asked.clear();
    if (!check_ok(guest_maps_page(m, va, stack_label(va)), "the guest's mapping")) return false;
    const virt_range victim = placement(m);
    say("no free 16 KiB left in the window: the stub moved over the guest's pages at " + where(victim));
    check(m.store.size() == stub_pages, "the 4 guest pages there went to the shadow store (" +
                                            std::to_string(m.store.size()) + " pages kept)");
    check(stub_pointers_say(m, victim.start()) && stub_mapped_at(m, victim),
          "the stub is mapped over them, pointers fixed");
    print_tlb(m);

    m.manager.trace().enabled = false;
    for (std::uint64_t p = va - page_bytes; p >= window.start().value() + slot_bytes; p -= page_bytes)
        if (!check_ok(guest_maps_page(m, p, stack_label(p)), "a stack page")) return false;
    m.manager.trace().enabled = true;
    say("the stack keeps growing, down to " + hex(window.start() + slot_bytes) + ": the window is full");
    return true;
}

// The page the guest writes while it is displaced (step 8), and works on in step 9.
struct displaced_page {
    std::uint64_t va = 0;
};

bool step_displaced_access(machine& m, displaced_page& written) {
    heading("8. The guest touches its displaced pages: the shadow store answers");
    const std::uint64_t va = placement(m).start().value();
    written.va = va;
    auto kind = m.manager.classify(m.guest_id, virt_addr{va});
    say("a guest access to " + hex(va) + " faults (a supervisor-only page at CPL 3); classify() says \"" +
        (kind ? to_string(*kind) : "?") + "\",");
    say("so handle_fault() answers \"emulate\" and the emulator calls access_displaced()");
    check(kind && *kind == fault_class::displaced, "the fault is the guest's displaced content, not a conflict");
    std::string seen;
    const touched how = guest_read(m, va, seen, 64);
    say("the guest reads " + hex(va) + ": \"" + seen + "\", " + to_string(how));
    check(how == touched::emulated && seen == m.labels[va],
          "it saw its own bytes: the stub's page traps, the manager serves the shadow copy");

    const std::string note = "written while displaced";
    const touched wrote = guest_write(m, va + 0x100, note);
    const touched reread = guest_read(m, va + 0x100, seen, 64);
    say("the guest writes \"" + note + "\" at " + hex(va + 0x100) + " and reads back \"" + seen + "\"");
    check(wrote == touched::emulated && reread == touched::emulated && seen == note,
          "the write went to the shadow copy");

    const mapping* original = m.store.original(shadow_key{m.guest_id, virt_addr{va}});
    if (!check(original != nullptr, "the store remembers the guest's mapping of the page")) return false;
    const char* frame = reinterpret_cast<const char*>(m.memory.at(original->phys));
    say("the guest's own frame " + hex(original->phys) + " has nothing at 0x100 yet: it gets the shadow copy back");
    say("when the stub leaves");
    return check(std::string(frame + 0x100).empty(), "nothing was written into the guest's frame yet");
}

// The guest's working set from now on: the page it wrote in step 8 and the
// top of its stack. Each tick it increments a counter in each.
constexpr std::uint64_t counter_offset = 0x800;

std::uint64_t work_one_tick(machine& m, std::span<const std::uint64_t> working_set) {
    std::uint64_t traps = 0;
    for (std::uint64_t page : working_set) {
        std::uint64_t n = 0;
        if (guest_read_u64(m, page + counter_offset, n) == touched::emulated) ++traps;
        if (guest_write_u64(m, page + counter_offset, n + 1) == touched::emulated) ++traps;
    }
    return traps;
}

bool step_hops(machine& m, const displaced_page& written, std::uint64_t& ticks_run) {
    heading("9. Hops: every 4 ticks the tracker judges the placement; a hot one moves on");
    const std::array<std::uint64_t, 2> working_set{written.va, window.start().value() + slot_bytes};
    say("the guest now works on " + hex(working_set[0]) + " (under the stub) and " + hex(working_set[1]) +
        " (its stack top), every tick");
    m.manager.trace().enabled = false;
    const std::uint64_t hops_before = m.manager.stats().hops;
    std::uint64_t traps = 0;
    constexpr std::uint64_t max_ticks = 400;
    ticks_run = 0;
    while (ticks_run < max_ticks) {
        traps += work_one_tick(m, working_set);
        ++ticks_run;
        const virt_range at = placement(m);
        auto outcome = m.manager.tick();
        if (!check_ok(outcome, "tick")) return false;
        if (*outcome == tick_outcome::waiting) continue;
        const std::string period = "tick " + std::to_string(ticks_run) + ": " + std::to_string(traps) +
                                   " traps on the stub's pages this period, ";
        traps = 0;
        if (*outcome == tick_outcome::hopped) say(period + "hot -> hop " + text(at) + " -> " + where(placement(m)));
        else say(period + "cold -> stays at " + text(at));
        if (m.manager.hopping() == hop_state::settled) break;
    }
    m.manager.trace().enabled = true;
    const std::uint64_t hops = m.manager.stats().hops - hops_before;
    const virt_range settled = placement(m);
    const bool untouched = !settled.contains(virt_addr{working_set[0]}) && !settled.contains(virt_addr{working_set[1]});
    check(m.manager.hopping() == hop_state::settled && hops >= 1 && untouched,
          "settled after " + std::to_string(hops) + " hop(s), on a range the guest does not touch");
    check(stub_pointers_say(m, placement(m).start()) && stub_mapped_at(m, placement(m)),
          "the stub is mapped at the settled placement, pointers fixed");
    std::string seen;
    const touched how = guest_read(m, written.va + 0x100, seen, 64);
    say("the guest reads " + hex(written.va + 0x100) + ": \"" + seen + "\", " + to_string(how));
    check(how == touched::directly && seen == "written while displaced",
          "the shadow copy went back into the guest's frame when the stub left");
    return true;
}

// ---- rollback ---------------------------------------------------------------

// Everything a failed operation must leave as it was.
struct whole_state {
    std::vector<mapping> monitor, guest;
    std::vector<std::byte> stub_tables;
    std::uint64_t lstar = 0;
    virt_range placement;
    std::vector<std::vector<std::byte>> shadow;  // the pages displaced under the placement
    std::size_t shadow_pages = 0;
    std::size_t free_frames = 0;
    statistics stats;  // rollbacks zeroed: the one counter a failure changes

    bool operator==(const whole_state&) const = default;
};

std::vector<mapping> all_mappings(const space& s) {
    std::vector<mapping> out;
    auto walked = s.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [&](const mapping& e) {
        out.push_back(e);
        return walk_control::proceed;
    });
    if (!walked) out.clear();
    return out;
}

whole_state take_state(const machine& m) {
    whole_state s;
    s.monitor = all_mappings(m.monitor);
    s.guest = all_mappings(m.guest);
    const auto* t = reinterpret_cast<const std::byte*>(m.tables);
    s.stub_tables.assign(t, t + sizeof(x86_64::stub_tables));
    s.lstar = m.lstar;
    s.placement = placement(m);
    for (std::uint64_t p = s.placement.start().value(); p < s.placement.end().value(); p += page_bytes) {
        std::vector<std::byte> bytes(page_bytes);
        if (m.store.read(shadow_key{m.guest_id, virt_addr{p}}, 0, bytes)) s.shadow.push_back(std::move(bytes));
    }
    s.shadow_pages = m.store.size();
    s.free_frames = m.memory.frames().free_count();
    s.stats = m.manager.stats();
    s.stats.rollbacks = 0;
    return s;
}

bool step_rollback(machine& m) {
    heading("10. A fixup refuses: the relocation rolls back and nothing changes");
    const virt_range at = placement(m);
    const std::uint64_t va = at.start().value();
    say("the guest unmaps " + hex(va) + " (under the stub: its content goes back to its frame)");
    if (!check_ok(m.manager.guest_unmap(m.guest_id, virt_range::of(virt_addr{va}, page_bytes)), "guest unmap"))
        return false;
    m.labels.erase(va);

    say("and maps a fresh page there: a conflict; this time the LSTAR fixup refuses the move");
    m.lstar_fixup.refuse_next = true;
    const whole_state before = take_state(m);
    const std::uint64_t rollbacks = m.manager.stats().rollbacks;
    m.tlb.asked.clear();
    const std::string label = "remapped page " + hex(va);
    const status refused = guest_maps_page(m, va, label);
    check(failed_with(refused, error::fixup_refused), std::string("the guest's mapping failed with ") +
                                                          (refused ? "success?" : to_string(refused.error_code())));
    check(take_state(m) == before,
          "every page table, the stub's tables, LSTAR, the shadow store, the frames and the counters are as before");
    check(m.manager.stats().rollbacks == rollbacks + 1, "the manager counted one rollback");
    say("placement still " + text(placement(m)) + ", IDT gate 14 still -> " + hex(page_fault_gate(m)));
    say("(fixups run first: the five built-in ones had moved the IDT, TSS, GDTR and IDTR; the rollback moved");
    say(" them back, before any page table changed)");
    print_tlb(m, " (no page table changed)");

    say("the monitor tries again (the fixup accepts now):");
    if (!check_ok(guest_maps_page(m, va, label), "the guest's mapping, second try")) return false;
    say("the stub moved " + text(at) + " -> " + where(placement(m)) + " and " + hex(va) + " is the guest's");
    check(stub_pointers_say(m, placement(m).start()) && stub_mapped_at(m, placement(m)), "the stub is consistent");
    print_tlb(m);
    return true;
}

// ---- the end ------------------------------------------------------------------

bool step_verify(machine& m, const displaced_page& written, std::uint64_t ticks) {
    heading("11. The guest checks all of its memory");
    m.manager.trace().enabled = false;
    std::uint64_t direct = 0, emulated = 0, wrong = 0;
    for (const auto& [va, label] : m.labels) {
        std::string seen;
        const touched how = guest_read(m, va, seen, 64);
        if (how == touched::directly) ++direct;
        else if (how == touched::emulated) ++emulated;
        if (how == touched::guest_fault || seen != label) ++wrong;
    }
    say(std::to_string(m.labels.size()) + " pages: " + std::to_string(direct) + " read directly, " +
        std::to_string(emulated) + " through the shadow store (under the stub)");
    check(wrong == 0, "every page holds what the guest put there");
    std::uint64_t a = 0, b = 0;
    (void)guest_read_u64(m, written.va + counter_offset, a);
    (void)guest_read_u64(m, window.start().value() + slot_bytes + counter_offset, b);
    check(a == ticks && b == ticks, "both working-set counters read " + std::to_string(ticks) +
                                        ", one increment per tick, wherever the page was at the time");
    m.manager.trace().enabled = true;
    return true;
}

void print_statistics(const machine& m) {
    heading("12. The manager's statistics");
    const statistics s = m.manager.stats();
    auto n = [](std::uint64_t v) { return std::to_string(v); };
    say("placements " + n(s.placements) + ", conflicts " + n(s.conflicts) + ", free relocations " +
        n(s.free_relocations) + " (the first placement included), victim relocations " + n(s.victim_relocations));
    say("hops " + n(s.hops) + ", settled " + n(s.settled) + ", ticks " + n(s.ticks) + ", rollbacks " +
        n(s.rollbacks) + ", reflected " + n(s.reflected));
    say("pages displaced " + n(s.pages_displaced) + ", restored " + n(s.pages_restored) + ", bytes copied " +
        n(s.bytes_copied) + ", shadow reads " + n(s.shadow_reads) + ", shadow writes " + n(s.shadow_writes) + " (" +
        n(s.shadow_bytes) + " bytes)");
    say("(fast and slow trap counts come from an attached trap_router; this walk-through has none)");
}

std::uint64_t seed_from_environment() {
    if (const char* s = std::getenv("ASRELOC_SEED")) return std::strtoull(s, nullptr, 0);
    return 8;  // fixed, so that the output in README.md is what you see (three hops)
}

}  // namespace

int main() {
    const std::uint64_t seed = seed_from_environment();
    std::cout << "asreloc walk-through: a monitor's stub in a guest's address space (victim seed " << seed
              << "; set ASRELOC_SEED to change it)\n";
    auto m = std::make_unique<machine>(seed);
    displaced_page written;
    std::uint64_t ticks = 0;
    const bool completed = step_memory(*m) && step_spaces(*m) && step_layout(*m) && step_stub(*m) && step_place(*m) &&
                           step_free_relocation(*m) && step_victim_relocation(*m) &&
                           step_displaced_access(*m, written) && step_hops(*m, written, ticks) &&
                           step_rollback(*m) && step_verify(*m, written, ticks);
    print_statistics(*m);
    if (!completed || failed_checks > 0) {
        std::cout << "\nwalk-through FAILED (" << failed_checks << " failed checks"
                  << (completed ? "" : ", stopped early") << ")\n";
        return 1;
    }
    std::cout << "\nwalk-through complete: every check passed\n";
    return 0;
}
