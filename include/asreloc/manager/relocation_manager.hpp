// The relocation manager: the method of US 7,020,738 over the page-table
// concept. It keeps the stub mapped at one placement in every guest space and
// in the monitor space (supervisor-only in the guest spaces), classifies guest
// faults and mapping events, moves the stub out of the guest's way (into a
// free range, else over a random victim whose content goes to the shadow
// store), serves the displaced content to an instruction emulator, and hops
// on a timer until the placement is cold. Every change is all or nothing.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include <gsl/assert>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/manager/classify.hpp"
#include "asreloc/manager/excluded_ranges.hpp"
#include "asreloc/manager/fixup.hpp"
#include "asreloc/manager/statistics.hpp"
#include "asreloc/manager/stub.hpp"
#include "asreloc/manager/trace.hpp"
#include "asreloc/manager/trap_routing.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/paging/phys_map.hpp"
#include "asreloc/paging/tlb.hpp"
#include "asreloc/policy/hotness_tracker.hpp"
#include "asreloc/policy/region_finder.hpp"
#include "asreloc/policy/shadow_store.hpp"
#include "asreloc/policy/victim_selector.hpp"

namespace asreloc {

// Fixed capacities (template argument, so no heap): guest spaces registered at
// once, stub pages, fixups, pinned ranges.
struct manager_limits {
    std::size_t guest_spaces = 8;
    std::size_t stub_pages = 32;
    std::size_t fixups = 32;
    std::size_t pins = 16;
};

// Runtime choices.
struct manager_config {
    // Where placements may go (free and victim alike), and how they are aligned
    // and guarded (guard: free bytes kept on each side of a free placement).
    std::uint64_t alignment = page_bytes;
    std::uint64_t guard = 0;
    virt_range window = virt_range::everything();
    // A victim candidate that overlaps a monitor-space mapping cannot be used
    // (the monitor's content is not displaceable); the manager draws again, up
    // to this many times, then answers no_victim. Narrow `window` to the part
    // of the space the monitor leaves alone to make this rare.
    std::uint32_t victim_attempts = 16;
    // tick(): every hop_period ticks the placement is judged; 0 never hops.
    std::uint32_t hop_period = 0;
    // Consecutive cold periods after which hopping counts as settled.
    std::uint32_t settle_periods = 1;
};

using space_id = std::uint32_t;

enum class relocation_kind : std::uint8_t { free, victim };

// What one successful move did.
struct relocation_report {
    bool had_placement = false;  // false for the first placement
    virt_range from{};           // the old placement (when had_placement)
    virt_range to{};
    relocation_kind kind = relocation_kind::free;  // victim when any guest page was displaced
    std::uint64_t pages_displaced = 0;
    std::uint64_t pages_restored = 0;
};

enum class tick_outcome : std::uint8_t {
    waiting,  // not the end of a hop period (or hopping disabled, or not placed)
    stayed,   // the placement was cold: no hop
    hopped,   // the placement was hot: the stub moved to a random range
};

enum class hop_state : std::uint8_t { hopping, settled };

constexpr const char* to_string(relocation_kind k) noexcept {
    switch (k) {
    case relocation_kind::free: return "free";
    case relocation_kind::victim: return "victim";
    }
    return "unknown";
}
constexpr const char* to_string(tick_outcome t) noexcept {
    switch (t) {
    case tick_outcome::waiting: return "waiting";
    case tick_outcome::stayed: return "stayed";
    case tick_outcome::hopped: return "hopped";
    }
    return "unknown";
}
constexpr const char* to_string(hop_state h) noexcept {
    switch (h) {
    case hop_state::hopping: return "hopping";
    case hop_state::settled: return "settled";
    }
    return "unknown";
}

// Usage (x86-64; tests/manager/world.hpp builds a complete one):
//
//   relocation_manager<space, top_down_finder, random_victim<pcg32>, pool_shadow_store,
//                      trap_count_tracker<>, my_tlb, offset_phys_map> m{
//       monitor, {}, victims, store, tracker, tlb, phys, {.window = lower_half, .hop_period = 100}};
//   m.add_guest_space(guest);                       // one per guest process
//   m.add_fixups(builtin_fixups.list());            // x86_64::stub_fixups over the stub's tables
//   m.place({stub_pages, tables_built_for});
//   // #PF from the guest:   switch (*m.handle_fault(id, cr2, kind)) { retry / emulate / reflect }
//   // emulator:             m.access_displaced(id, va, bytes, kind)
//   // guest PTE write:      m.guest_map(id, range, frame, attrs, size) / m.guest_unmap(id, range)
//   // timer:                m.tick()
//   // after any move:       reload GDTR, IDTR, TR from the (fixed-up) stub tables
//
// Known limits:
// - Displaced content is a copy (claim 10): if the guest maps the same frame
//   at another address too, writes through that alias while the page is
//   displaced are overwritten when the content is restored. Pin such ranges.
// - The shadow store must hold the displaced pages of two placements at once
//   (a move copies the new victim before it restores the old one).
// - The accessed/dirty bits of displaced pages come back when the backend can
//   set them (mark_accessed); a large page partly displaced comes back as
//   4 KiB pages (same frames and attributes).
//
// P: the page-table type of every space (guest spaces and the monitor space).
// Finder / Victims: region_finder / victim_selector policies over P.
// Store: shadow_store; Tracker: hotness_tracker; Tlb: the invalidation hook
// (one hook for all spaces: a relocation changes the same ranges in each, so
// the hook invalidates them wherever the spaces are live, or marks them for a
// flush on the next switch); Map: how the monitor reaches physical memory.
//
// Single-threaded: the embedder serialises every call (one monitor lock, or
// one CPU). The manager holds pointers to the spaces and policies it is
// given; they must outlive it.
template <page_table P, region_finder<P> Finder, victim_selector<P> Victims, shadow_store Store,
          hotness_tracker Tracker, tlb Tlb, phys_map Map, trace_sink Trace = null_trace,
          manager_limits Limits = manager_limits{}>
class relocation_manager {
    static_assert(Limits.guest_spaces > 0 && Limits.stub_pages > 0);

public:
    static constexpr manager_limits limits = Limits;
    // Large guest leaves a placement can cut into: one per 2 MiB block it
    // touches (4 KiB leaves are undone from the shadow store, see undo_kind).
    static constexpr std::size_t large_leaves_per_placement = (Limits.stub_pages + 510) / 512 + 1;
    // Undo-log entries one operation may need: per guest space its displaced
    // 4 KiB pages (one entry), its large leaves, and the stub mapped at the
    // new placement, unmapped from the old one, and the old placement's
    // displaced pages mapped back; two for the monitor space. It does not
    // grow with the stub: a stub page costs its stub_page entry only.
    static constexpr std::size_t journal_capacity = Limits.guest_spaces * (large_leaves_per_placement + 4) + 2;

    relocation_manager(P& monitor, const Finder& finder, Victims& victims, Store& store, Tracker& tracker, Tlb& tlb,
                       const Map& memory, manager_config config = {}, Trace trace = {}) noexcept
        : monitor_(&monitor), finder_(finder), victims_(&victims), store_(&store), tracker_(&tracker), tlb_(&tlb),
          memory_(&memory), config_(config), trace_(trace) {}

    relocation_manager(const relocation_manager&) = delete;
    relocation_manager& operator=(const relocation_manager&) = delete;

    // ---- setup --------------------------------------------------------------

    // Registers a guest space (one guest process = one page table). When the
    // stub is placed, it is mapped into the new space at the placement; guest
    // content the new space has there is displaced into the shadow store first
    // (as for a victim). Errors: capacity_exceeded, overlaps (already
    // registered, or the monitor space), and those of a relocation (out_of_frames,
    // shadow_store_full, capacity_exceeded); nothing changes on error.
    result<space_id> add_guest_space(P& space) {
        if (&space == monitor_) return failure(error::overlaps);
        for (std::size_t i = 0; i < Limits.guest_spaces; ++i)
            if (guests_[i] == &space) return failure(error::overlaps);
        std::size_t id = Limits.guest_spaces;
        for (std::size_t i = 0; i < Limits.guest_spaces; ++i)
            if (guests_[i] == nullptr) {
                id = i;
                break;
            }
        if (id == Limits.guest_spaces) return failure(error::capacity_exceeded);
        const auto sid = static_cast<space_id>(id);
        guests_[id] = &space;  // before the transaction: its undo log names the space by id
        if (placed_) {
            begin();
            std::uint64_t displaced = 0;
            status done = displace(sid, space, placement_, displaced);
            if (done) done = map_stub(space, sid, placement_);
            if (!done) {
                const failure f = abort(done.error_code());
                guests_[id] = nullptr;
                return f;
            }
            finish_flushes();
            displaced_[id] = static_cast<std::uint32_t>(displaced);
            stats_.pages_displaced += displaced;
            stats_.bytes_copied += displaced * page_bytes;
        }
        emit({.kind = trace_kind::space_added, .space = sid, .to = placement_});
        return sid;
    }

    // Unregisters a guest space: the stub leaves it and its displaced content
    // goes back (remapped, content restored). Errors: unknown_address_space,
    // out_of_frames (remapping); nothing changes on error.
    status remove_guest_space(space_id id) {
        P* space = guest(id);
        if (space == nullptr) return failure(error::unknown_address_space);
        if (placed_) {
            begin();
            if (auto s = unmap_stub(*space, id, placement_); !s) return abort(s.error_code());
            if (auto s = remap_displaced(*space, id, placement_); !s) return abort(s.error_code());
            finish_flushes();
            const std::uint64_t restored = restore_displaced(id, placement_);
            displaced_[id] = 0;
            stats_.pages_restored += restored;
            stats_.bytes_copied += restored * page_bytes;
            emit({.kind = trace_kind::space_removed, .space = id});
            emit_restored(id, placement_, restored);
        } else {
            emit({.kind = trace_kind::space_removed, .space = id});
        }
        guests_[id] = nullptr;
        return {};
    }

    // Registers something that must follow the stub (manager/fixup.hpp); on
    // x86-64 pass x86_64::stub_fixups::list() for the built-in ones. Fixups
    // run in registration order and are undone in reverse. Errors:
    // capacity_exceeded (nothing added).
    status add_fixup(fixup f) noexcept {
        Expects(f.apply != nullptr);
        if (fixup_count_ == Limits.fixups) return failure(error::capacity_exceeded);
        fixups_[fixup_count_++] = f;
        return {};
    }
    status add_fixups(std::span<const fixup> fs) noexcept {
        if (fs.size() > Limits.fixups - fixup_count_) return failure(error::capacity_exceeded);
        for (const fixup& f : fs) (void)add_fixup(f);
        return {};
    }

    // Pins a range no victim may ever cover (MMIO, the guest's own page
    // tables, ...). Free placements are not restricted by pins (nothing of the
    // guest's is there to lose). Errors: capacity_exceeded.
    status pin(virt_range r) noexcept {
        if (pin_count_ == Limits.pins) return failure(error::capacity_exceeded);
        pins_[pin_count_++] = r;
        return {};
    }
    // Errors: not_mapped (no such pin).
    status unpin(virt_range r) noexcept {
        for (std::size_t i = 0; i < pin_count_; ++i)
            if (pins_[i] == r) {
                pins_[i] = pins_[--pin_count_];
                return {};
            }
        return failure(error::not_mapped);
    }
    std::span<const virt_range> pins() const noexcept { return {pins_.data(), pin_count_}; }

    // Counts of an attached router show up in statistics() (claims 7 and 8).
    void attach_router(const trap_router* router) noexcept { router_ = router; }

    // ---- placement (claims 1-6) ----------------------------------------------

    // Maps the stub at one placement in every guest space and the monitor
    // space, same frames, supervisor-only in the guest spaces: a range free in
    // all of them (the finder), else a victim whose guest content is
    // displaced. Fixups run from stub.built_for to the placement.
    // Errors: overlaps (already placed), empty_range (no pages),
    // capacity_exceeded (more pages than Limits.stub_pages), misaligned (a
    // frame), no_victim, and the relocation errors; nothing changes on error.
    result<relocation_report> place(const stub_description& stub) {
        if (placed_) return failure(error::overlaps);
        if (stub.pages.empty()) return failure(error::empty_range);
        if (stub.pages.size() > Limits.stub_pages) return failure(error::capacity_exceeded);
        for (const stub_page& p : stub.pages)
            if (!p.frame.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        // Kept as mapped (supervisor-only), so no move rebuilds the attributes.
        for (std::size_t i = 0; i < stub.pages.size(); ++i)
            pages_[i] = stub_page{stub.pages[i].frame, supervisor_only(stub.pages[i].attrs)};
        page_count_ = stub.pages.size();
        built_for_ = stub.built_for;
        auto r = relocate_away(nullptr, relocation_cause::placement);
        if (!r) page_count_ = 0;
        return r;
    }

    bool is_placed() const noexcept { return placed_; }
    // Errors: not_placed.
    result<virt_range> placement() const noexcept {
        if (!placed_) return failure(error::not_placed);
        return placement_;
    }
    std::uint64_t stub_size() const noexcept { return page_count_ * page_bytes; }
    // The stub's pages as mapped: the frames and attributes given to place,
    // with `user` cleared.
    std::span<const stub_page> stub_pages() const noexcept { return {pages_.data(), page_count_}; }

    // ---- classification (claims 1, 5, 6, 11) ----------------------------------

    // Whose is a guest fault at va in `space`? (See fault_class.) Pure: it
    // changes nothing. Errors: unknown_address_space.
    result<fault_class> classify(space_id space, virt_addr va) const noexcept {
        if (guest(space) == nullptr) return failure(error::unknown_address_space);
        if (!placed_ || !placement_.contains(va)) return fault_class::not_ours;
        if (store_->original(shadow_key{space, va.align_down(page_size::size_4k)}) != nullptr)
            return fault_class::displaced;
        return fault_class::conflict;
    }

    // Whether a guest mapping of `range` in `space` would conflict with the
    // stub (the guest wrote a page-table entry inside the placement).
    // Errors: unknown_address_space.
    result<bool> classify_mapping(space_id space, virt_range range) const noexcept {
        if (guest(space) == nullptr) return failure(error::unknown_address_space);
        return placed_ && placement_.overlaps(range);
    }

    // Classifies and acts on a guest fault: a conflict moves the stub out of
    // the page's way (retry); displaced content is for the emulator (emulate);
    // anything else goes back to the guest (reflect). The hotness tracker
    // hears of each guest touch of the placement once: a conflict here, an
    // access to displaced content in access_displaced (once per displaced
    // page the access touches), never both.
    // Errors: unknown_address_space, and a failed relocation's (nothing changed).
    result<fault_action> handle_fault(space_id space, virt_addr va, access_kind) {
        auto c = classify(space, va);
        if (!c) return failure(c.error_code());
        switch (*c) {
        case fault_class::not_ours:
            ++stats_.reflected;
            emit({.kind = trace_kind::reflected, .space = space, .from = virt_range::of(va, 1)});
            return fault_action::reflect;
        case fault_class::displaced: return fault_action::emulate;  // access_displaced records the touch
        case fault_class::conflict: break;
        }
        tracker_->record_access(va, 1);
        const auto page = virt_range::of(va.align_down(page_size::size_4k), page_bytes);
        auto r = resolve_conflict(space, page);
        if (!r) return failure(r.error_code());
        return fault_action::retry;
    }

    // ---- relocation (claims 1, 9, 10) -----------------------------------------

    // Moves the stub off `range` (which the guest of `space` needs): into a
    // free range outside it (claim 9), else over a random victim (claim 10).
    // When the placement does not overlap `range`, nothing happens and the
    // report's from == to. Errors: not_placed, unknown_address_space,
    // no_victim, out_of_frames, shadow_store_full, fixup_refused,
    // capacity_exceeded; nothing changes on error (but `rollbacks`).
    result<relocation_report> resolve_conflict(space_id space, virt_range range) {
        if (guest(space) == nullptr) return failure(error::unknown_address_space);
        if (!placed_) return failure(error::not_placed);
        if (!placement_.overlaps(range)) return relocation_report{true, placement_, placement_};
        emit({.kind = trace_kind::conflict, .space = space, .from = range, .to = placement_});  // the cause first
        return relocate_away(&range, relocation_cause::conflict);
    }

    // Moves the stub to `to` (free in the monitor space; guest content there
    // is displaced). For embedders and tests that choose the place themselves.
    // Errors: not_placed, misaligned, overlaps (to overlaps the placement or
    // a monitor-space mapping, or has the wrong size), non_canonical, and the
    // relocation errors; nothing changes on error (but `rollbacks`, which
    // counts a monitor-space overlap: the move itself finds it).
    result<relocation_report> relocate_to(virt_range to) {
        if (!placed_) return failure(error::not_placed);
        if (!to.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (to.size() != stub_size() || to.overlaps(placement_)) return failure(error::overlaps);
        if (!canonical_everywhere(to)) return failure(error::non_canonical);
        return move_stub(to, relocation_cause::explicit_move);
    }

    // ---- guest mapping events ---------------------------------------------------

    // The guest of `space` maps `range` (its shadow page-table write). If the
    // range overlaps the placement, that is a conflict: the stub moves first,
    // then the mapping goes in. Like page_table::map it never replaces
    // anything: a range holding guest pages (mapped or displaced) answers
    // overlaps. A guest PTE write that replaces a present entry is therefore
    // guest_unmap of the old page, then guest_map: if the old page was
    // displaced, guest_unmap writes the shadow copy (with every emulated
    // write) back into the old frame and drops it, so the guest's old frame
    // holds what the guest last wrote when it maps it elsewhere, and the new
    // mapping can never be shadowed by stale content. Errors checked before
    // anything moves: unknown_address_space,
    // empty_range, misaligned, non_canonical, overlaps. Errors the backend
    // reports from the map itself (out_of_frames, invalid_attributes,
    // unsupported_page_size) can come after a conflict already moved the
    // stub: the move stands (a complete, consistent state) and the mapping
    // is not made.
    status guest_map(space_id space, virt_range range, phys_addr phys, attributes attrs, page_size size) {
        P* s = guest(space);
        if (s == nullptr) return failure(error::unknown_address_space);
        if (!range.is_aligned(size) || !phys.is_aligned(size)) return failure(error::misaligned);
        if (!s->is_canonical(range.start()) || !s->is_canonical(range.last())) return failure(error::non_canonical);
        if (holds_guest_pages(space, *s, range)) return failure(error::overlaps);
        if (placed_ && placement_.overlaps(range)) {
            auto moved = resolve_conflict(space, range);
            if (!moved) return failure(moved.error_code());
        }
        auto m = s->map(range, phys, attrs, size);
        if (!m) return failure(m.error_code());
        m->apply(*tlb_);
        emit({.kind = trace_kind::guest_mapped, .space = space, .from = range});
        return {};
    }

    // The guest of `space` unmaps `range`: every 4 KiB page of it must be a
    // guest page, mapped or displaced (else not_mapped). Displaced pages are
    // written back into the guest frame they came from (the guest may map
    // that frame again and expects its content) and dropped from the shadow
    // store; the stub stays. Errors: unknown_address_space, empty_range,
    // misaligned, non_canonical, not_mapped, out_of_frames (splitting a large
    // page), capacity_exceeded; nothing changes on error.
    status guest_unmap(space_id space, virt_range range) {
        P* s = guest(space);
        if (s == nullptr) return failure(error::unknown_address_space);
        if (!range.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!s->is_canonical(range.start()) || !s->is_canonical(range.last())) return failure(error::non_canonical);
        outside_parts parts = split_around_placement(range);
        for (std::size_t i = 0; i < parts.count; ++i)
            if (any_gap(*s, parts.part[i])) return failure(error::not_mapped);
        const auto inside = placed_ ? intersect(range, placement_) : range_overlap{false, {}};
        if (inside.any) {
            bool all_displaced = true;
            for_each_page(inside.range, [&](virt_addr p) {
                if (store_->original(shadow_key{space, p}) == nullptr) all_displaced = false;
            });
            if (!all_displaced) return failure(error::not_mapped);
        }
        begin();
        if (auto r = unmap_guest_parts(*s, space, parts); !r) return abort(r.error_code());
        finish_flushes();
        emit({.kind = trace_kind::guest_unmapped, .space = space, .from = range});
        if (inside.any) {
            const std::uint64_t restored = restore_displaced(space, inside.range);
            displaced_[space] -= static_cast<std::uint32_t>(restored);
            stats_.pages_restored += restored;
            stats_.bytes_copied += restored * page_bytes;
            emit_restored(space, inside.range, restored);
        }
        return {};
    }

    // ---- displaced content (claim 11) -------------------------------------------

    // An emulated guest access to `data.size()` bytes at va in `space`, for an
    // instruction emulator. Each 4 KiB piece is served from where the guest's
    // byte lives: displaced pages from the shadow store; pages outside the
    // placement through the guest's own mapping (so an access that straddles
    // the placement's edge works in one call). A piece on a stub page with
    // nothing of the guest's under it answers not_mapped: the guest has no
    // mapping there (reflect a #PF, or, if the embedder knows better, call
    // resolve_conflict and retry). Every piece is checked before any byte
    // moves. Errors: unknown_address_space, not_mapped, write_protected,
    // out_of_bounds (the access wraps past 2^64); on error no byte moved.
    status access_displaced(space_id space, virt_addr va, std::span<std::byte> data, access_kind kind) {
        P* s = guest(space);
        if (s == nullptr) return failure(error::unknown_address_space);
        if (data.empty()) return {};
        if (va.value() + (data.size() - 1) < va.value()) return failure(error::out_of_bounds);
        const bool write = kind == access_kind::write;
        std::uint64_t shadow_bytes = 0;
        for (int pass = 0; pass < 2; ++pass) {
            std::uint64_t done = 0;
            while (done < data.size()) {
                const virt_addr at = va + done;
                const virt_addr page = at.align_down(page_size::size_4k);
                const std::uint64_t offset = at - page;
                const std::uint64_t n = min_of<std::uint64_t>(page_bytes - offset, data.size() - done);
                const auto piece = data.subspan(done, n);
                if (const mapping* original = displaced_original(space, page)) {
                    if (write && !original->attrs.writable) return failure(error::write_protected);
                    if (pass == 1) {
                        shadow_bytes += n;
                        tracker_->record_access(at, 1);
                        if (write) (void)store_->write(shadow_key{space, page}, offset, piece);
                        else (void)store_->read(shadow_key{space, page}, offset, piece);
                    }
                } else {
                    if (placed_ && placement_.contains(page)) return failure(error::not_mapped);
                    auto t = s->translate(at);
                    if (!t) return failure(error::not_mapped);
                    if (write && !t->page.attrs.writable) return failure(error::write_protected);
                    if (pass == 1) {
                        std::byte* p = memory_->to_virt(t->phys);
                        if (write) std::memcpy(p, piece.data(), n);
                        else std::memcpy(piece.data(), p, n);
                    }
                }
                done += n;
            }
        }
        if (shadow_bytes > 0) {
            ++(write ? stats_.shadow_writes : stats_.shadow_reads);
            stats_.shadow_bytes += shadow_bytes;
            emit({.kind = write ? trace_kind::shadow_write : trace_kind::shadow_read,
                  .space = space,
                  .from = virt_range::of(va, data.size()),
                  .count = shadow_bytes});
        }
        return {};
    }

    // Whether the page at va of `space` is displaced (its content in the store).
    bool is_displaced(space_id space, virt_addr va) const noexcept {
        return displaced_original(space, va.align_down(page_size::size_4k)) != nullptr;
    }

    // ---- hop (claim 12) -----------------------------------------------------------

    // Called from the embedder's timer. Every config.hop_period ticks the
    // placement is judged by the tracker (whose own hot/cold hysteresis keeps
    // a placement near the threshold from flipping every period): hot, the
    // stub hops to a random range (the victim selector's draw: free or a
    // victim); cold, it stays, and after config.settle_periods cold periods
    // hopping counts as settled until the placement heats up again. The
    // tracker ages once per period, after the judgement.
    // Errors: those of the hop's relocation (nothing changed; the tracker
    // still ages, so a failing hop is retried next period with fresh data).
    result<tick_outcome> tick() {
        ++stats_.ticks;
        if (config_.hop_period == 0 || !placed_ || stats_.ticks % config_.hop_period != 0)
            return tick_outcome::waiting;
        const bool cold = tracker_->is_cold(placement_);
        if (cold) {
            if (++cold_periods_ >= config_.settle_periods && hop_state_ == hop_state::hopping) {
                hop_state_ = hop_state::settled;
                ++stats_.settled;
                emit({.kind = trace_kind::settled, .to = placement_});
            }
            tracker_->age();
            return tick_outcome::stayed;
        }
        cold_periods_ = 0;
        if (hop_state_ == hop_state::settled) {
            hop_state_ = hop_state::hopping;
            emit({.kind = trace_kind::resumed, .to = placement_});
        }
        auto r = hop();
        tracker_->age();
        if (!r) return failure(r.error_code());
        return tick_outcome::hopped;
    }

    hop_state hopping() const noexcept { return hop_state_; }

    // What the last successful move or placement did (handle_fault,
    // guest_map, tick and place report a move only through their effect).
    // Errors: not_placed (nothing moved yet).
    result<relocation_report> last_relocation() const noexcept {
        if (!has_last_) return failure(error::not_placed);
        return last_;
    }

    // ---- state ------------------------------------------------------------------------

    // The counters; fast/slow traps and router reflections come from the
    // attached router (if any) at the time of the call.
    statistics stats() const noexcept {
        statistics s = stats_;
        if (router_ != nullptr) {
            s.fast_traps = router_->fast_traps();
            s.slow_traps = router_->slow_traps();
            s.reflected += router_->reflected();
        }
        return s;
    }
    P* guest(space_id id) const noexcept { return id < Limits.guest_spaces ? guests_[id] : nullptr; }
    P& monitor() const noexcept { return *monitor_; }
    const manager_config& config() const noexcept { return config_; }
    Trace& trace() noexcept { return trace_; }
    const Tracker& tracker() const noexcept { return *tracker_; }

private:
    enum class relocation_cause : std::uint8_t { placement, conflict, hop, explicit_move };

    // ---- the undo log ---------------------------------------------------------
    //
    // Every reversible page-table step of an operation is journaled; a failure
    // replays the journal backwards, then undoes the fixups. Each undo step
    // brings the tables back to their shape before the step, so it needs at
    // most the frames the steps after it gave back: with the allocator used
    // only by these spaces, undo cannot run out of frames. An undo that fails
    // anyway is a broken contract (a backend that is not transactional), not
    // an input error, hence Expects.
    enum class undo_kind : std::uint8_t {
        unmap_stub,        // the stub was mapped at `range`
        remap_stub,        // the stub was unmapped from `range`
        restore_leaf,      // `range` (part of guest leaf `leaf`) was unmapped; if shadowed its pages went to the store
        unmap_displaced,   // displaced pages of `range` were mapped back to the guest
        remap_small_leaves,  // 4 KiB guest leaves in `range` were displaced: the store holds each one's mapping
    };
    // A displaced 4 KiB leaf is its own 4 KiB piece, which the store keeps
    // with the content: one remap_small_leaves entry undoes them all, so the
    // log does not grow with the stub. A large leaf needs its own entry (the
    // store keeps only the pieces, and the leaf must come back whole).
    struct undo_entry {
        undo_kind kind = undo_kind::unmap_stub;
        bool shadowed = false;
        std::uint32_t space = 0;  // no_space: the monitor space
        virt_range range{};
        mapping leaf{};
    };

    using outside_parts = range_parts<2>;  // a range around the placement

    // The range the guest needs, and the candidates the fixups refused.
    static constexpr std::size_t refused_retries = 2;
    using search_exclusions = excluded_ranges<refused_retries + 1>;

    template <class T>
    static constexpr T min_of(T a, T b) noexcept {
        return a < b ? a : b;
    }

    P& space_of(std::uint32_t id) const noexcept { return id == no_space ? *monitor_ : *guests_[id]; }

    void begin() noexcept {
        journal_size_ = 0;
        applied_fixups_ = 0;
        pending_.clear();
    }

    status journal(const undo_entry& e) noexcept {
        if (journal_size_ == journal_capacity) return failure(error::capacity_exceeded);
        journal_[journal_size_++] = e;
        return {};
    }
    // Every kind but restore_leaf names a range only: undo reads nothing else
    // of its slot, so nothing else is written (a slot is 56 B, and a free
    // move journals four).
    status journal(undo_kind kind, std::uint32_t space, const virt_range& range) noexcept {
        Expects(kind != undo_kind::restore_leaf);
        if (journal_size_ == journal_capacity) return failure(error::capacity_exceeded);
        undo_entry& e = journal_[journal_size_++];
        e.kind = kind;
        e.space = space;
        e.range = range;
        return {};
    }

    void collect(const flush& f) noexcept { pending_.add(f); }
    void finish_flushes() noexcept { pending_.apply(*tlb_); }

    static void must(const status& s) noexcept { Expects(s.has_value()); }
    template <class T>
    static void must(const result<T>& r) noexcept {
        Expects(r.has_value());
    }

    // Undo everything journaled and every applied fixup, flush, count.
    failure abort(error code) noexcept {
        while (journal_size_ > 0) undo(journal_[--journal_size_]);
        while (applied_fixups_ > 0) must(fixups_[--applied_fixups_](fixup_to_, fixup_from_));
        finish_flushes();
        ++stats_.rollbacks;
        emit({.kind = trace_kind::rollback, .code = code});
        return failure(code);
    }

    void undo(const undo_entry& e) noexcept {
        P& s = space_of(e.space);
        switch (e.kind) {
        case undo_kind::unmap_stub: unmap_stub_pages(s, e.range); return;
        case undo_kind::remap_stub: must(map_stub_pages(s, e.range)); return;
        case undo_kind::restore_leaf: restore_leaf(s, e); return;
        case undo_kind::remap_small_leaves: remap_small_leaves(s, e); return;
        case undo_kind::unmap_displaced:
            for_each_page(e.range, [&](virt_addr p) {
                if (store_->original(shadow_key{e.space, p}) != nullptr) {
                    auto f = s.unmap(virt_range::of(p, page_bytes));
                    must(f);
                    collect(*f);
                }
            });
            return;
        }
    }

    void restore_leaf(P& s, const undo_entry& e) noexcept {
        const mapping& l = e.leaf;
        if (l.start < e.range.start()) {
            auto f = s.unmap(virt_range::from_bounds(l.start, e.range.start() - 1));
            must(f);
            collect(*f);
        }
        if (e.range.last() < l.range().last()) {
            auto f = s.unmap(virt_range::from_bounds(e.range.last() + 1, l.range().last()));
            must(f);
            collect(*f);
        }
        auto f = s.map(l.range(), l.phys, l.attrs, l.size);
        must(f);
        collect(*f);
        restore_ad_bits(s, l);
        if (e.shadowed) for_each_page(e.range, [&](virt_addr p) { must(store_->erase(shadow_key{e.space, p})); });
    }

    // The large leaves were undone first (journaled later): what is left of
    // `range` in the store are the 4 KiB leaves this operation displaced.
    void remap_small_leaves(P& s, const undo_entry& e) noexcept {
        for_each_page(e.range, [&](virt_addr p) {
            const mapping* o = store_->original(shadow_key{e.space, p});
            if (o == nullptr) return;
            const mapping leaf = *o;
            auto f = s.map(leaf.range(), leaf.phys, leaf.attrs, page_size::size_4k);
            must(f);
            collect(*f);
            restore_ad_bits(s, leaf);
            must(store_->erase(shadow_key{e.space, p}));
        });
    }

    // A remapped page comes back without the A/D bits the CPU had set; put
    // them back where the backend can (x86-64 and reference: mark_accessed).
    static void restore_ad_bits(P& s, const mapping& m) noexcept {
        if constexpr (requires { s.mark_accessed(m.start, m.dirty); }) {
            if (m.accessed || m.dirty) must(s.mark_accessed(m.start, m.dirty));
        }
    }

    template <class Visit>
    static void for_each_page(virt_range r, Visit&& visit) {
        for (std::uint64_t p = r.start().value();; p += page_bytes) {
            visit(virt_addr{p});
            if (p + (page_bytes - 1) == r.last().value()) break;
        }
    }

    // ---- stub mapping --------------------------------------------------------------

    // A backend that maps 4 KiB pages to frames that need not be consecutive
    // in one call (x86-64: one walk per page table instead of one per page).
    static constexpr bool maps_4k_pages = requires(P& s, virt_range r, attributes a) {
        { s.map_4k_pages(r, a, [](std::uint64_t) { return phys_addr{}; }) } -> std::same_as<result<flush>>;
    };

    // The stub's pages at `at`, in runs of equal attributes and (unless the
    // backend has map_4k_pages) physically consecutive frames, one map call
    // each; all or nothing.
    status map_stub_pages(P& s, virt_range at) noexcept {
        std::size_t i = 0;
        while (i < page_count_) {
            std::size_t j = i + 1;
            while (j < page_count_ && (maps_4k_pages || pages_[j].frame == pages_[j - 1].frame + page_bytes) &&
                   pages_[j].attrs == pages_[i].attrs)
                ++j;
            const auto run = virt_range::of(at.start() + i * page_bytes, (j - i) * page_bytes);
            auto f = map_run(s, run, i);
            if (!f) {
                if (i > 0) unmap_stub_pages(s, virt_range::of(at.start(), i * page_bytes));
                return failure(f.error_code());
            }
            collect(*f);
            i = j;
        }
        return {};
    }
    result<flush> map_run(P& s, virt_range run, std::size_t first) noexcept {
        if constexpr (maps_4k_pages)
            return s.map_4k_pages(run, pages_[first].attrs, [&](std::uint64_t k) { return pages_[first + k].frame; });
        else
            return s.map(run, pages_[first].frame, pages_[first].attrs, page_size::size_4k);
    }
    // The stub's own 4 KiB leaves: no split, so no frame needed and no failure.
    void unmap_stub_pages(P& s, virt_range at) noexcept {
        auto f = s.unmap(at);
        must(f);
        collect(*f);
    }

    // A backend that moves the stub's pages in one call (x86-64: one walk
    // when both placements lie in one page table, where a map and an unmap
    // take one each and the unmap looks for a table left empty).
    static constexpr bool moves_4k_pages = requires(P& s, virt_range r) {
        { s.move_4k_pages(r, r, [](std::uint64_t) { return stub_page{}; }) } -> std::same_as<result<flush>>;
    };

    // The stub from `from` to `to` in `s`, journaled as map_stub at `to` and
    // unmap_stub at `from` would be. overlaps: something is mapped at `to`.
    status move_stub_pages(P& s, std::uint32_t id, const virt_range& from, const virt_range& to) noexcept {
        if (journal_size_ + 2 > journal_capacity) return failure(error::capacity_exceeded);
        auto f = s.move_4k_pages(from, to, [&](std::uint64_t i) -> const stub_page& { return pages_[i]; });
        if (!f) return failure(f.error_code());
        collect(*f);
        must(journal(undo_kind::unmap_stub, id, to));
        must(journal(undo_kind::remap_stub, id, from));
        return {};
    }

    status map_stub(P& s, std::uint32_t id, virt_range at) noexcept {
        if (auto r = map_stub_pages(s, at); !r) return r;
        return journal(undo_kind::unmap_stub, id, at);
    }
    status unmap_stub(P& s, std::uint32_t id, virt_range at) noexcept {
        if (auto r = journal(undo_kind::remap_stub, id, at); !r) return r;
        unmap_stub_pages(s, at);
        return {};
    }

    // ---- displacement ----------------------------------------------------------------

    // Copies every guest page of `s` inside `dst` to the store (the 4 KiB
    // piece of its leaf) and unmaps it, leaf by leaf, journaled: one entry
    // for all the 4 KiB leaves, one per large leaf. The leaves are found a
    // batch at a time (the tables change under the walk), so a free
    // placement costs one walk and a small stack buffer.
    status displace(std::uint32_t id, P& s, virt_range dst, std::uint64_t& displaced) noexcept {
        if (auto r = journal(undo_kind::remap_small_leaves, id, dst); !r) return r;
        constexpr std::size_t batch = 16;
        virt_range rest = dst;
        for (;;) {
            mapping leaves[batch];
            std::size_t n = 0;
            auto walked = s.for_each_mapping(rest, walk_order::bottom_up, [&](const mapping& m) {
                leaves[n++] = m;
                return n == batch ? walk_control::stop : walk_control::proceed;
            });
            if (!walked) return failure(walked.error_code());
            for (std::size_t i = 0; i < n;) {
                // Adjacent 4 KiB leaves go as one run (one unmap); a large leaf alone.
                std::size_t j = i + 1;
                if (leaves[i].size == page_size::size_4k)
                    while (j < n && leaves[j].size == page_size::size_4k && leaves[j].start == leaves[j - 1].range().end())
                        ++j;
                if (auto r = displace_run(id, s, dst, std::span<const mapping>{leaves + i, j - i}, displaced); !r)
                    return r;
                i = j;
            }
            if (n < batch) return {};
            const virt_addr next = leaves[n - 1].range().end();
            if (leaves[n - 1].range().last() >= dst.last()) return {};
            rest = virt_range::from_bounds(next, dst.last());
        }
    }

    // One large leaf, or adjacent 4 KiB leaves (all inside dst): their pages
    // to the store, then one unmap; all or nothing.
    status displace_run(std::uint32_t id, P& s, virt_range dst, std::span<const mapping> run,
                        std::uint64_t& displaced) noexcept {
        const bool large = run.front().size != page_size::size_4k;
        const virt_range cut = large ? intersect(run.front().range(), dst).range
                                     : virt_range::from_bounds(run.front().start, run.back().range().last());
        if (large && journal_size_ == journal_capacity) return failure(error::capacity_exceeded);
        auto forget = [&](virt_addr first, virt_addr end) {
            for (virt_addr p = first; p != end; p = p + page_bytes) must(store_->erase(shadow_key{id, p}));
        };
        for (const mapping& l : run) {
            if (auto r = shadow_pieces(id, l, large ? cut : l.range()); !r) {
                forget(cut.start(), l.start < cut.start() ? cut.start() : l.start);
                return r;
            }
        }
        auto f = s.unmap(cut);
        if (!f) {
            forget(cut.start(), cut.end());
            return failure(f.error_code());
        }
        collect(*f);
        if (large)
            must(journal(
                {.kind = undo_kind::restore_leaf, .shadowed = true, .space = id, .range = cut, .leaf = run.front()}));
        displaced += cut.size() / page_bytes;
        return {};
    }

    // Inserts the pages of `cut` (inside leaf l) into the store; all or nothing.
    status shadow_pieces(std::uint32_t id, const mapping& l, virt_range cut) noexcept {
        std::uint64_t inserted = 0;
        status failed{};
        for_each_page(cut, [&](virt_addr p) {
            if (!failed) return;
            mapping piece;
            const bool inside_leaf = page_piece_of(l, p, piece);
            Expects(inside_leaf);
            const std::span<const std::byte> content{memory_->to_virt(piece.phys), page_bytes};
            if (auto r = store_->insert(shadow_key{id, p}, l, content); !r) failed = r;
            else ++inserted;
        });
        if (!failed) {
            for (std::uint64_t k = 0; k < inserted; ++k)
                must(store_->erase(shadow_key{id, cut.start() + k * page_bytes}));
            return failed;
        }
        return {};
    }

    // Maps back, for the guest of `s`, every displaced page under `at`
    // (journaled as one step); the content is copied back at commit.
    status remap_displaced(P& s, std::uint32_t id, virt_range at) noexcept {
        if (displaced_[id] == 0) return {};
        if (auto r = journal(undo_kind::unmap_displaced, id, at); !r) return r;
        status failed{};
        std::uint64_t mapped = 0;
        for_each_page(at, [&](virt_addr p) {
            if (!failed) return;
            const mapping* o = store_->original(shadow_key{id, p});
            if (o == nullptr) return;
            auto f = s.map(virt_range::of(p, page_bytes), o->phys, o->attrs, page_size::size_4k);
            if (!f) {
                failed = status(failure(f.error_code()));
                return;
            }
            collect(*f);
            restore_ad_bits(s, *o);
            ++mapped;
        });
        if (!failed) {
            // Undo the pages mapped so far now, and drop the journal entry.
            --journal_size_;
            for_each_page(at, [&](virt_addr p) {
                if (mapped == 0 || store_->original(shadow_key{id, p}) == nullptr) return;
                auto f = s.unmap(virt_range::of(p, page_bytes));
                must(f);
                collect(*f);
                --mapped;
            });
            return failed;
        }
        return {};
    }

    // Commit step: copy the content of every displaced page of `id` under
    // `at` into its guest frame and forget it. Cannot fail. Highest page
    // first: a store kept in key order (the pool's sorted index) then drops
    // entries from its end instead of shifting the rest down each time.
    std::uint64_t restore_displaced(std::uint32_t id, virt_range at) noexcept {
        std::uint64_t restored = 0;
        if (displaced_[id] == 0) return restored;
        for (std::uint64_t p = at.last().value() - (page_bytes - 1);; p -= page_bytes) {
            const shadow_key key{id, virt_addr{p}};
            if (store_->original(key) != nullptr) {
                must(restore_content(*store_, key, *memory_));
                ++restored;
            }
            if (p == at.start().value()) break;
        }
        return restored;
    }

    const mapping* displaced_original(space_id space, virt_addr page) const noexcept {
        if (!placed_ || !placement_.contains(page)) return nullptr;
        return store_->original(shadow_key{space, page});
    }

    // ---- the move ------------------------------------------------------------------------

    // Where the target came from: a free range (or the embedder's choice,
    // most likely free), or a victim, which has guest content to displace.
    enum class target_kind : std::uint8_t { likely_free, victim };

    // The transaction: the monitor space's stub moved to `to`, the fixups,
    // then per guest space whatever is at `to` displaced, the stub moved
    // there and what it had displaced at its old placement mapped back; then
    // (cannot fail) the displaced content copied back, flush, commit.
    result<relocation_report> move_stub(virt_range to, relocation_cause cause,
                                        target_kind target = target_kind::likely_free) {
        begin();
        relocation_report report{placed_, placement_, to};
        // The monitor space first: it is never displaced from, so a target
        // it uses (relocate_to's overlaps) is refused before anything moves.
        if (auto r = stub_moved(*monitor_, no_space, to); !r) return abort(r.error_code());
        fixup_from_ = placed_ ? placement_.start() : built_for_;
        fixup_to_ = to.start();
        if (fixup_from_ != fixup_to_) {
            for (std::size_t i = 0; i < fixup_count_; ++i) {
                if (auto r = fixups_[i](fixup_from_, fixup_to_); !r) return abort(r.error_code());
                ++applied_fixups_;
            }
        }
        std::array<std::uint32_t, Limits.guest_spaces> displaced_at_to{};
        for (std::uint32_t id = 0; id < Limits.guest_spaces; ++id) {
            P* s = guests_[id];
            if (s == nullptr) continue;
            std::uint64_t displaced = 0;
            if (auto r = stub_to(*s, id, to, target, displaced); !r) return abort(r.error_code());
            displaced_at_to[id] = static_cast<std::uint32_t>(displaced);
            report.pages_displaced += displaced;
            if (placed_)
                if (auto r = remap_displaced(*s, id, placement_); !r) return abort(r.error_code());
        }
        // Commit: nothing below can fail.
        finish_flushes();
        std::array<std::uint64_t, Limits.guest_spaces> restored{};
        if (placed_)
            for (std::uint32_t id = 0; id < Limits.guest_spaces; ++id)
                if (guests_[id] != nullptr) report.pages_restored += restored[id] = restore_displaced(id, placement_);
        displaced_ = displaced_at_to;
        placement_ = to;
        placed_ = true;
        report.kind = report.pages_displaced > 0 ? relocation_kind::victim : relocation_kind::free;
        count(report, cause);
        for (std::uint32_t id = 0; id < Limits.guest_spaces; ++id) emit_restored(id, report.from, restored[id]);
        last_ = report;
        has_last_ = true;
        return report;
    }

    // Guest space `s`: whatever the guest has at `to` displaced, then the
    // stub moved there. Where the backend moves pages in one call and `to`
    // is likely free, the move is tried first: a free `to` then costs no look
    // for guest content; if the guest has some there the move changes
    // nothing and answers overlaps.
    status stub_to(P& s, std::uint32_t id, virt_range to, target_kind target, std::uint64_t& displaced) noexcept {
        if constexpr (moves_4k_pages) {
            if (placed_ && target == target_kind::likely_free) {
                const status moved = stub_moved(s, id, to);
                if (moved || moved.error_code() != error::overlaps) return moved;
            }
        }
        if (auto r = displace(id, s, to, displaced); !r) return r;
        return stub_moved(s, id, to);
    }

    // The stub mapped at `to` in `s` and unmapped from its placement, if it
    // has one: one backend call where the backend can move pages.
    status stub_moved(P& s, std::uint32_t id, virt_range to) noexcept {
        if constexpr (moves_4k_pages)
            if (placed_) return move_stub_pages(s, id, placement_, to);
        if (auto r = map_stub(s, id, to); !r) return r;
        if (placed_) return unmap_stub(s, id, placement_);
        return {};
    }

    void count(const relocation_report& r, relocation_cause cause) noexcept {
        const bool victim = r.kind == relocation_kind::victim;
        stats_.pages_displaced += r.pages_displaced;
        stats_.pages_restored += r.pages_restored;
        stats_.bytes_copied += (r.pages_displaced + r.pages_restored) * page_bytes;
        if (cause == relocation_cause::placement) {
            ++stats_.placements;
            if (victim) ++stats_.victim_placements;
            emit({.kind = trace_kind::placed, .to = r.to, .count = r.pages_displaced});
            return;
        }
        ++(victim ? stats_.victim_relocations : stats_.free_relocations);
        if (cause == relocation_cause::conflict) {
            ++stats_.conflicts;
            ++(victim ? stats_.conflicts_over_victim : stats_.conflicts_into_free);
        }
        if (cause == relocation_cause::hop) {
            ++stats_.hops;
            emit({.kind = trace_kind::hopped, .from = r.from, .to = r.to});
        }
        emit({.kind = victim ? trace_kind::relocated_victim : trace_kind::relocated_free,
              .from = r.from,
              .to = r.to,
              .count = r.pages_displaced});
    }

    void emit_restored(std::uint32_t id, virt_range at, std::uint64_t pages) noexcept {
        if (pages > 0) emit({.kind = trace_kind::restored, .space = id, .from = at, .count = pages});
    }

    // ---- choosing where ----------------------------------------------------------------

    struct space_set {
        std::array<const P*, Limits.guest_spaces + 1> spaces{};
        std::size_t count = 0;
        std::span<const P* const> span() const noexcept { return {spaces.data(), count}; }
    };
    space_set all_spaces() const noexcept {
        space_set s;
        s.spaces[s.count++] = monitor_;
        for (P* g : guests_)
            if (g != nullptr) s.spaces[s.count++] = g;
        return s;
    }

    bool canonical_everywhere(virt_range r) const noexcept {
        const space_set s = all_spaces();
        for (const P* p : s.span())
            if (!p->is_canonical(r.start()) || !p->is_canonical(r.last())) return false;
        return true;
    }

    outside_parts split_around_placement(virt_range r) const noexcept {
        excluded_ranges<1> placement;
        if (placed_) placement.add(placement_);
        return placement.parts_of(r);
    }

    static constexpr bool searches_top_down = [] {
        if constexpr (requires { Finder::order; }) return Finder::order == walk_order::top_down;
        else return false;
    }();

    // Claim 9 first (a range free in every space), then claim 10 (a victim).
    // A free range where a fixup's result would not be canonical (a stack
    // top at the end of a range that ends at the top of the lower half) is
    // left out and the next one tried, a few times, before a victim. A
    // fixup's own veto (fixup_refused) ends the operation, as the embedder
    // asked.
    result<relocation_report> relocate_away(const virt_range* avoid, relocation_cause cause) {
        search_exclusions excluded;
        if (avoid != nullptr) excluded.add(*avoid);
        for (;;) {
            auto free_range = find_free(excluded);
            if (!free_range) {
                if (free_range.error_code() != error::no_free_range) return fail_early(free_range.error_code());
                break;
            }
            auto moved = move_stub(*free_range, cause);
            if (moved || moved.error_code() != error::non_canonical || excluded.full()) return moved;
            excluded.add(*free_range);
        }
        auto victim = find_victim(avoid);
        if (!victim) return fail_early(victim.error_code());
        return move_stub(*victim, cause, target_kind::victim);
    }

    // A failure before anything changed still counts as a rolled-back operation.
    failure fail_early(error code) noexcept {
        ++stats_.rollbacks;
        emit({.kind = trace_kind::rollback, .code = code});
        return failure(code);
    }

    // The window's parts outside the excluded ranges, in the finder's own
    // order where it has one (a top-down finder asks the highest part
    // first), else lowest first.
    result<virt_range> find_free(const search_exclusions& excluded) const {
        const space_set s = all_spaces();
        const auto windows = excluded.parts_of(config_.window);
        for (std::size_t k = 0; k < windows.count; ++k) {
            const std::size_t i = searches_top_down ? windows.count - 1 - k : k;
            const region_request request{stub_size(), config_.alignment, config_.guard, windows.part[i]};
            auto r = finder_.find_free(s.span(), request);
            if (r) return *r;
            if (r.error_code() != error::no_free_range) return failure(r.error_code());
        }
        return failure(error::no_free_range);
    }

    // A victim candidate: never pinned, never the placement or `avoid`, never
    // over a monitor-space mapping, canonical in every space (drawn again,
    // config_.victim_attempts times).
    result<virt_range> find_victim(const virt_range* avoid) {
        std::array<virt_range, Limits.pins + 2> blocked{};
        std::size_t n = 0;
        for (std::size_t i = 0; i < pin_count_; ++i) blocked[n++] = pins_[i];
        if (placed_) blocked[n++] = placement_;
        if (avoid != nullptr) blocked[n++] = *avoid;
        const space_set s = all_spaces();
        const victim_request request{stub_size(), config_.alignment, config_.window,
                                     std::span<const virt_range>{blocked.data(), n}};
        for (std::uint32_t attempt = 0; attempt < config_.victim_attempts; ++attempt) {
            auto v = victims_->select(s.span(), request);
            if (!v) return failure(v.error_code());
            // A selector may not know every space's canonical range (an
            // adapter's 32-bit space): such a draw is drawn again.
            if (canonical_everywhere(*v) && !any_mapping(*monitor_, *v)) return *v;
        }
        return failure(error::no_victim);
    }

    result<relocation_report> hop() {
        auto to = find_victim(nullptr);
        if (!to) return fail_early(to.error_code());
        return move_stub(*to, relocation_cause::hop, target_kind::victim);
    }

    // ---- small queries ---------------------------------------------------------------

    static bool any_mapping(const P& s, virt_range r) noexcept {
        bool any = false;
        auto walked = s.for_each_mapping(r, walk_order::bottom_up, [&](const mapping&) {
            any = true;
            return walk_control::stop;
        });
        return !walked || any;
    }
    static bool any_gap(const P& s, virt_range r) noexcept {
        bool any = false;
        auto walked = s.for_each_gap(r, walk_order::bottom_up, [&](const virt_range&) {
            any = true;
            return walk_control::stop;
        });
        return !walked || any;
    }

    // Whether `range` of guest `id` holds a guest page: a mapping outside the
    // placement, or a displaced page inside it.
    bool holds_guest_pages(space_id id, const P& s, virt_range range) const noexcept {
        const outside_parts parts = split_around_placement(range);
        for (std::size_t i = 0; i < parts.count; ++i)
            if (any_mapping(s, parts.part[i])) return true;
        if (!placed_ || !placement_.overlaps(range) || displaced_[id] == 0) return false;
        bool any = false;
        for_each_page(intersect(range, placement_).range, [&](virt_addr p) {
            if (store_->original(shadow_key{id, p}) != nullptr) any = true;
        });
        return any;
    }

    // Unmaps the parts of a guest_unmap (outside the placement), all or
    // nothing. An unmap fails only where it must split a large page
    // (out_of_frames), and only a part's outer edge can cut one: the
    // placement's pages are the stub's 4 KiB leaves, so no guest leaf
    // crosses its edges. So the second part's cut leaf goes first (one
    // journaled leaf), then the first part (which may fail: that one leaf
    // is undone), then the rest of the second part, which cannot fail.
    status unmap_guest_parts(P& s, space_id id, const outside_parts& parts) noexcept {
        if (parts.count == 0) return {};
        virt_range second = parts.part[parts.count - 1];
        bool second_left = true;
        if (parts.count == 2) {
            auto edge = s.translate(second.last());
            if (!edge) return failure(edge.error_code());
            const mapping& leaf = edge->page;
            if (second.last() < leaf.range().last()) {
                const auto piece = virt_range::from_bounds(leaf.start < second.start() ? second.start() : leaf.start,
                                                           second.last());
                auto f = s.unmap(piece);
                if (!f) return failure(f.error_code());
                collect(*f);
                must(journal({.kind = undo_kind::restore_leaf, .space = id, .range = piece, .leaf = leaf}));
                second_left = second.start() < piece.start();
                if (second_left) second = virt_range::from_bounds(second.start(), piece.start() - 1);
            }
            auto f = s.unmap(parts.part[0]);
            if (!f) return failure(f.error_code());
            collect(*f);
        }
        if (!second_left) return {};
        auto f = s.unmap(second);
        if (!f) {
            // Only reachable with one part (a second part without a cut
            // cannot fail): nothing changed.
            Expects(parts.count == 1);
            return failure(f.error_code());
        }
        collect(*f);
        return {};
    }

    void emit(const trace_event& e) noexcept {
        if constexpr (is_tracing<Trace>) trace_.record(e);
    }

    P* monitor_;
    Finder finder_;
    Victims* victims_;
    Store* store_;
    Tracker* tracker_;
    Tlb* tlb_;
    const Map* memory_;
    manager_config config_;
    [[no_unique_address]] Trace trace_;
    const trap_router* router_ = nullptr;

    std::array<P*, Limits.guest_spaces> guests_{};
    std::array<stub_page, Limits.stub_pages> pages_{};
    std::size_t page_count_ = 0;
    virt_addr built_for_{};
    bool placed_ = false;
    virt_range placement_{};

    std::array<fixup, Limits.fixups> fixups_{};
    std::size_t fixup_count_ = 0;
    std::array<virt_range, Limits.pins> pins_{};
    std::size_t pin_count_ = 0;

    // Pages of each guest space displaced at the placement (loops over the
    // placement's pages skip the spaces with none).
    std::array<std::uint32_t, Limits.guest_spaces> displaced_{};
    std::array<undo_entry, journal_capacity> journal_{};
    std::size_t journal_size_ = 0;
    std::size_t applied_fixups_ = 0;
    virt_addr fixup_from_{};
    virt_addr fixup_to_{};
    flush_batch<8> pending_{};

    statistics stats_{};
    relocation_report last_{};
    bool has_last_ = false;
    hop_state hop_state_ = hop_state::hopping;
    std::uint32_t cold_periods_ = 0;
};

}  // namespace asreloc
