// A guest as the lab replays it: what it maps and unmaps, which pages it
// touches how often, and when the monitor's timer ticks -- converted from one
// data file (each file is one guest). Addresses are the guest's own; folding
// into a smaller search window happens in the replay.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/container/flat_hash_set.h>

#include "lab/formats/guest_ranges.hpp"
#include "lab/formats/mapping_events.hpp"
#include "lab/formats/maps_layout.hpp"
#include "lab/formats/page_access.hpp"

namespace asreloc::lab {

enum class step_kind : std::uint8_t {
    place,   // the monitor places the stub (before or after the guest's first mappings)
    map,     // the guest maps [start, end), replacing whatever it had there (mmap semantics)
    ensure,  // the guest maps the parts of [start, end) it has not mapped (first touch of a page)
    unmap,   // the guest unmaps whatever it has in [start, end)
    access,  // the guest touches page `start` `count` times (reads)
    tick,    // the monitor's timer: hotness sampling and tick()
};

struct guest_step {
    step_kind kind = step_kind::tick;
    bool writable = false;
    bool executable = false;
    std::uint32_t count = 0;
    std::uint64_t start = 0;
    std::uint64_t end = 0;  // exclusive
};

enum class guest_kind : std::uint8_t { layout, events, access, guest_os };

inline const char* to_string(guest_kind k) noexcept {
    switch (k) {
    case guest_kind::layout: return "layout";
    case guest_kind::events: return "events";
    case guest_kind::access: return "access";
    case guest_kind::guest_os: return "guest-os";
    }
    return "?";
}

struct guest_workload {
    std::string name;  // the file, relative to the data directory
    guest_kind kind = guest_kind::layout;
    // The guest's own space: [space_first, space_last] (the user half of a
    // 64-bit process, 4 GiB for a 32-bit one, the whole canonical space of a
    // 64-bit guest OS) and whether its tables need 5-level paging.
    std::uint64_t space_first = 0;
    std::uint64_t space_last = 0;
    bool five_level = false;
    std::vector<guest_step> steps;
    std::uint64_t accesses = 0;       // guest memory accesses in the trace
    std::uint64_t mapping_calls = 0;  // map/unmap/remap/brk events or layout regions
    std::uint64_t ignored = 0;        // protect events, regions outside the space (vsyscall, ESPFIX)
    std::uint64_t ticks = 0;
};

// A 64-bit Linux process owns the user half but its last page: TASK_SIZE_MAX
// is 2^47 - 4 KiB (arch/x86/include/asm/page_64_types.h), because a SYSCALL
// in the last bytes would return to a non-canonical address. The stub has a
// like limit:
// a stack that ends at its last byte would have its top at 2^47, which the CPU
// refuses to load from the TSS (#SS), so the stack fixup refuses that placement.
inline constexpr std::uint64_t user_half_last_64 = (std::uint64_t{1} << 47) - 4096 - 1;
inline constexpr std::uint64_t space_last_32 = (std::uint64_t{1} << 32) - 1;

namespace workload_detail {

inline void push_range(guest_workload& w, step_kind kind, std::uint64_t start, std::uint64_t end, bool writable = true,
                       bool executable = false) {
    if (end <= start || start < w.space_first || end - 1 > w.space_last) {
        ++w.ignored;
        return;
    }
    w.steps.push_back({kind, writable, executable, 0, start, end});
}

inline guest_workload make(std::string name, guest_kind kind, std::uint64_t space_last) {
    guest_workload w;
    w.name = std::move(name);
    w.kind = kind;
    w.space_last = space_last;
    return w;
}

inline void tick(guest_workload& w) {
    w.steps.push_back({step_kind::tick});
    ++w.ticks;
}

}  // namespace workload_detail

// A snapshot: the guest's regions are mapped, then the stub is placed into
// what is left (a crowded snapshot forces a victim).
inline guest_workload workload_from_layout(const maps_layout& layout, std::string name, bool is_32bit) {
    auto w = workload_detail::make(std::move(name), guest_kind::layout, is_32bit ? space_last_32 : user_half_last_64);
    for (const auto& r : layout.regions) {
        workload_detail::push_range(w, step_kind::map, r.start, r.end, r.perms.write, r.perms.execute);
        ++w.mapping_calls;
    }
    w.steps.push_back({step_kind::place});
    return w;
}

// A mapping-event trace from exec on: the stub is placed in the empty space,
// then every call is replayed (mmap replaces what it covers, as the kernel
// does; brk grows or shrinks the heap from the first break; mprotect changes
// no mapping and is skipped). One tick per call.
inline guest_workload workload_from_events(const event_trace& trace, std::string name, bool is_32bit) {
    auto w = workload_detail::make(std::move(name), guest_kind::events, is_32bit ? space_last_32 : user_half_last_64);
    w.steps.push_back({step_kind::place});
    bool have_break = false;
    std::uint64_t heap_start = 0, heap_end = 0;  // page-rounded
    for (const auto& e : trace.events) {
        switch (e.op) {
        case event_op::map:
            workload_detail::push_range(w, step_kind::map, e.addr, e.addr + round_up_to_page(e.len));
            break;
        case event_op::unmap:
            workload_detail::push_range(w, step_kind::unmap, e.addr, e.addr + round_up_to_page(e.len));
            break;
        case event_op::remap:
            workload_detail::push_range(w, step_kind::unmap, e.addr, e.addr + round_up_to_page(e.len));
            workload_detail::push_range(w, step_kind::map, e.new_addr, e.new_addr + round_up_to_page(e.new_len));
            break;
        case event_op::protect: ++w.ignored; continue;
        case event_op::brk: {
            const std::uint64_t brk_end = round_up_to_page(e.addr);
            if (!have_break) {
                have_break = true;
                heap_start = heap_end = brk_end;
            } else if (brk_end > heap_end) {
                workload_detail::push_range(w, step_kind::map, heap_end, brk_end);
                heap_end = brk_end;
            } else if (brk_end < heap_end && brk_end >= heap_start) {
                workload_detail::push_range(w, step_kind::unmap, brk_end, heap_end);
                heap_end = brk_end;
            }
            break;
        }
        }
        ++w.mapping_calls;
        workload_detail::tick(w);
    }
    return w;
}

// A page-access trace: the stub is placed first; a page is mapped when the
// guest first touches it (the trace does not record mappings); one tick per
// window of 100,000 accesses.
inline guest_workload workload_from_accesses(const access_trace& trace, std::string name) {
    auto w = workload_detail::make(std::move(name), guest_kind::access, user_half_last_64);
    w.steps.reserve(trace.accesses.size() * 2 + trace.windows() + 1);
    w.steps.push_back({step_kind::place});
    absl::flat_hash_set<std::uint64_t> seen;
    std::uint64_t window = 0;
    for (const auto& a : trace.accesses) {
        while (window < a.window) {
            workload_detail::tick(w);
            ++window;
        }
        const std::uint64_t va = a.address();
        if (va > w.space_last) {
            ++w.ignored;
            continue;
        }
        if (seen.insert(a.page).second) {
            w.steps.push_back({step_kind::ensure, true, false, 0, va, va + 4096});
            ++w.mapping_calls;
        }
        w.steps.push_back({step_kind::access, false, false, a.count, va, va + 4096});
        w.accesses += a.count;
    }
    workload_detail::tick(w);
    return w;
}

// Linux's ESPFIX64 area maps the same few pages tens of thousands of times
// (see guest-os/README.md); it is not "regions" and is skipped.
inline constexpr std::uint64_t espfix_first = 0xffffff0000000000;
inline constexpr std::uint64_t espfix_last = 0xffffff7fffffffff;

// A whole guest-OS space (kernel and user halves): mapped, then the stub is placed.
inline guest_workload workload_from_guest_os(const guest_space_dump& dump, std::string name) {
    const bool is_32bit = dump.paging == guest_paging::two_level || dump.paging == guest_paging::three_level_pae;
    auto w = workload_detail::make(std::move(name), guest_kind::guest_os, is_32bit ? space_last_32 : ~std::uint64_t{0});
    w.five_level = dump.paging == guest_paging::five_level;
    for (const auto& r : dump.ranges) {
        ++w.mapping_calls;
        if (!is_32bit && r.start >= espfix_first && r.end - 1 <= espfix_last) {
            ++w.ignored;
            continue;
        }
        workload_detail::push_range(w, step_kind::map, r.start, r.end, r.writable, r.executable);
    }
    w.steps.push_back({step_kind::place});
    return w;
}

}  // namespace asreloc::lab
