// The x86-64 page-table backend: 4-level and 5-level paging with 4 KiB, 2 MiB
// and 1 GiB pages, written in the architectural format so that the tables it
// builds can be loaded into CR3 as they are (SDM vol. 3A, 4.5).
//
// Every change is transactional: it validates its input and takes every frame
// it will need from the allocator before it writes a single entry, so an error
// leaves the tables bit for bit as they were and gives the frames back.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/frame_allocator.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/paging/phys_map.hpp"
#include "asreloc/x86_64/entry.hpp"
#include "asreloc/x86_64/paging_mode.hpp"

namespace asreloc::x86_64 {

// What the processor offers beyond the baseline.
struct features {
    // 1 GiB pages need CPUID.80000001H:EDX.Page1GB[bit 26]; without them a
    // map of 1 GiB pages answers unsupported_page_size and coalesce stops at 2 MiB.
    bool pages_1g = true;
};

template <frame_allocator Alloc, phys_map Map>
class page_table {
public:
    // A new, empty space whose root table comes from `frames`. The page table
    // owns its tables and gives them back when destroyed.
    static result<page_table> create(Alloc& frames, const Map& memory, paging_mode mode, features f = {}) noexcept {
        auto root = frames.allocate_frame();
        if (!root) return failure(root.error_code());
        zero_frame(memory, *root);
        return page_table{frames, memory, mode, f, *root, true};
    }
    // Tables that already exist (a guest's, the boot tables): changed in place,
    // never freed as a whole; tables emptied by unmap still go back to `frames`.
    static page_table adopt(Alloc& frames, const Map& memory, paging_mode mode, phys_addr root,
                            features f = {}) noexcept {
        return page_table{frames, memory, mode, f, root, false};
    }

    page_table(const page_table&) = delete;
    page_table& operator=(const page_table&) = delete;
    page_table(page_table&& o) noexcept
        : frames_(o.frames_), memory_(o.memory_), mode_(o.mode_), features_(o.features_), root_(o.root_),
          owning_(std::exchange(o.owning_, false)) {}
    page_table& operator=(page_table&& o) noexcept {
        if (this != &o) {
            release();
            frames_ = o.frames_;
            memory_ = o.memory_;
            mode_ = o.mode_;
            features_ = o.features_;
            root_ = o.root_;
            owning_ = std::exchange(o.owning_, false);
        }
        return *this;
    }
    ~page_table() { release(); }

    phys_addr root() const noexcept { return root_; }
    paging_mode mode() const noexcept { return mode_; }
    bool is_canonical(virt_addr va) const noexcept { return va.is_canonical(width(mode_)); }

    // ---- the page_table concept (contract in asreloc/paging/page_table.hpp) ----

    result<translation> translate(virt_addr va) const noexcept {
        if (!is_canonical(va)) return failure(error::non_canonical);
        effective_rights rights;
        const std::uint64_t* table = table_at(root_);
        for (unsigned level = top(); level >= 1; --level) {
            const entry e{table[table_index(va.value(), level)]};
            if (!e.present()) return failure(error::not_mapped);
            if (e.is_leaf(level)) {
                const auto m = leaf_mapping(e, level, va.align_down(size_of_level(level)), rights);
                return translation{m.phys + va.page_offset(m.size), m};
            }
            rights = rights.through(e);
            table = table_at(e.table_address());
        }
        return failure(error::not_mapped);  // unreachable: a PTE is always a leaf
    }

    result<flush> map(virt_range range, phys_addr phys, attributes attrs, page_size size) noexcept {
        const unsigned leaf_level = level_of(size);
        if (leaf_level == 0 || (leaf_level == 3 && !features_.pages_1g)) return failure(error::unsupported_page_size);
        if (!range.is_aligned(size) || !phys.is_aligned(size)) return failure(error::misaligned);
        if (!is_canonical_range(range)) return failure(error::non_canonical);
        if (!encodable(attrs)) return failure(error::invalid_attributes);
        const std::uint64_t last_phys = phys.value() + (range.size() - 1);
        if (last_phys < phys.value() || !phys_addr{last_phys}.is_valid()) return failure(error::out_of_bounds);
        if (leaf_level == 1) {
            auto consecutive = [&](std::uint64_t i) { return page_leaf{phys + i * page_bytes, attrs}; };
            if (const auto fast = map_in_leaf_table(range, consecutive); fast != fast_path::not_taken) {
                if (fast == fast_path::overlaps) return failure(error::overlaps);
                return flush::none();
            }
        }
        if (any_mapping_in(range)) return failure(error::overlaps);

        frame_reserve reserve{*this};
        if (auto r = reserve.take(tables_needed(root_, top(), range, leaf_level)); !r) return failure(r.error_code());
        // Only not-present entries became present, nothing cached to forget
        // (4.10.4.3), unless a leaf replaced a table left empty: see map_into.
        flush replaced = flush::none();
        map_into(table_at(root_), top(), range, phys.value() - range.start().value(), attrs, leaf_level, reserve,
                 replaced);
        return replaced;
    }

    // ---- extensions: the manager's stub map and move ----

    // Maps the 4 KiB pages of `range`, page i to frame_of(i) (any 4 KiB
    // aligned frames, not necessarily consecutive), all with `attrs`: what
    // map does one page at a time, with one walk when the range lies in one
    // existing page table. All or nothing; errors as map.
    template <class FrameOf>
    result<flush> map_4k_pages(virt_range range, attributes attrs, FrameOf&& frame_of) noexcept {
        return map_leaves(range, [&](std::uint64_t i) { return page_leaf{frame_of(i), attrs}; });
    }

    // Moves 4 KiB pages from `from` to `to` (the same size, apart): page i of
    // `to` gets leaf_of(i).frame with leaf_of(i).attrs, and everything mapped
    // in `from` goes, as map_4k_pages of `to` followed by unmap of `from`.
    // When both lie in one existing page table (a stub hopping within 2 MiB)
    // that is one walk, and no look for a table left empty: the table now
    // holds `to`. All or nothing. Errors: misaligned, non_canonical,
    // invalid_attributes, out_of_bounds (sizes differ, a frame past the
    // physical width), overlaps (something mapped in `to`, or the ranges
    // overlap), not_mapped (a hole in `from`), out_of_frames.
    template <class LeafOf>
    result<flush> move_4k_pages(virt_range from, virt_range to, LeafOf&& leaf_of) noexcept {
        if (from.size() != to.size()) return failure(error::out_of_bounds);
        if (from.overlaps(to)) return failure(error::overlaps);
        if (auto valid = validate(from); !valid) return failure(valid.error_code());
        if (auto valid = check_leaves(to, leaf_of); !valid) return failure(valid.error_code());
        if (const auto fast = move_in_leaf_tables(from, to, leaf_of); fast != fast_path::not_taken) {
            if (fast == fast_path::overlaps) return failure(error::overlaps);
            if (fast == fast_path::not_mapped) return failure(error::not_mapped);
            return flush::of(from);
        }
        // Refusals come in the fast path's order: overlaps before not_mapped.
        // `from` 4 KiB leaves in one page table (the stub's, whatever `to`
        // needs): nothing to split, so the map, then the entries cleared.
        if (in_one_page_table(from)) {
            const std::uint64_t src = from.start().value();
            const table_path p = walk_to_page_table(src);
            const unsigned first = table_index(src, 1), last = table_index(from.last().value(), 1);
            if (p.stopped_at == 0 || !p.stopped_on_leaf) {
                if (p.stopped_at != 0 || !all_present(p.table[1], first, last))
                    return failure(any_mapping_in(to) ? error::overlaps : error::not_mapped);
                auto mapped = map_checked_leaves(to, leaf_of);
                if (!mapped) return mapped;
                // The map added tables for `to` only: the path to `from` holds.
                clear_leaves(p, src, first, last);
                return flush::of(from).merge(*mapped);
            }
        }
        // Elsewhere: everything the unmap needs (no hole, a frame for each
        // large page to split) is checked and taken before the map writes,
        // so that after it the unmap cannot fail.
        if (any_mapping_in(to)) return failure(error::overlaps);
        if (any_gap_in(from)) return failure(error::not_mapped);
        const cut_list cuts = cuts_for(from);
        frame_reserve split_frames{*this};
        if (auto r = split_frames.take(cuts.count); !r) return failure(r.error_code());
        auto mapped = map_checked_leaves(to, leaf_of);
        if (!mapped) return mapped;
        const virt_range affected = split_all(cuts, from, split_frames);
        unmap_in(table_at(root_), top(), from);
        return flush::of(affected).merge(*mapped);
    }

    result<flush> unmap(virt_range range) noexcept {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        if (const auto fast = unmap_in_leaf_table(range); fast != fast_path::not_taken) {
            if (fast == fast_path::not_mapped) return failure(error::not_mapped);
            return flush::of(range);
        }
        auto prepared = prepare_change(range);
        if (!prepared) return failure(prepared.error_code());
        unmap_in(table_at(root_), top(), range);
        return flush::of(prepared->affected);
    }

    result<flush> protect(virt_range range, attributes attrs) noexcept {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        if (!encodable(attrs)) return failure(error::invalid_attributes);
        auto prepared = prepare_change(range);
        if (!prepared) return failure(prepared.error_code());
        protect_in(table_at(root_), top(), range, attrs);
        return flush::of(prepared->affected);
    }

    template <class Visitor>
    result<walk_control> for_each_mapping(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (in_one_page_table(window)) return walk_one_page_table(window, order, visit);
        return walk_mappings(root_, top(), 0, window, order, effective_rights{}, visit);
    }

    template <class Visitor>
    result<walk_control> for_each_gap(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        gap_collector<Visitor> gaps{visit, order};
        if (walk_free_runs(root_, top(), 0, window, order, gaps) == walk_control::stop) return walk_control::stop;
        return gaps.finish();
    }

    // ---- the piecewise_gap_walk refinement ----

    template <class Visitor>
    result<walk_control> for_each_free_piece(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        piece_forwarder<Visitor> pieces{visit};
        return walk_free_runs(root_, top(), 0, window, order, pieces);
    }

    // ---- the accessed_dirty_page_table refinement ----

    // A large page has one A and one D bit: clearing them for a range clears
    // them for every page that overlaps it.
    result<ad_sample> query_and_clear(virt_range range, ad_bits clear) noexcept {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        std::uint64_t clear_mask = 0;
        if (has(clear, ad_bits::accessed)) clear_mask |= bits::accessed;
        if (has(clear, ad_bits::dirty)) clear_mask |= bits::dirty;
        ad_sample sample;
        bool cleared = false;
        for_each_leaf_slot(root_, top(), 0, range, [&](std::uint64_t& slot, unsigned level, std::uint64_t va) {
            const entry e{slot};
            // A leaf with neither bit (every leaf of a cold range) has nothing
            // to count or clear.
            if ((e.raw() & (bits::accessed | bits::dirty)) == 0) return;
            // A PTE the (4 KiB aligned) range touches lies wholly inside it.
            const std::uint64_t pages =
                level == 1 ? 1 : intersect(range, virt_range::of(virt_addr{va}, entry_span(level))).range.size() / page_bytes;
            if (e.accessed()) sample.accessed_pages += pages;
            if (e.dirty()) sample.dirty_pages += pages;
            if ((e.raw() & clear_mask) != 0) {
                slot = e.without(clear_mask).raw();
                cleared = true;
            }
        });
        if (cleared) sample.invalidate = flush::of(range);
        return sample;
    }

    // ---- extras ----

    // Set A in every entry of the walk to va, and D in the leaf when `write`:
    // what the CPU does on an access (SDM vol. 3A, 4.8), for emulators and tests.
    status mark_accessed(virt_addr va, bool write) noexcept {
        if (!is_canonical(va)) return failure(error::non_canonical);
        if (!translate(va)) return failure(error::not_mapped);
        std::uint64_t* table = table_at(root_);
        for (unsigned level = top(); level >= 1; --level) {
            std::uint64_t& slot = table[table_index(va.value(), level)];
            slot |= bits::accessed;
            if (entry{slot}.is_leaf(level)) {
                if (write) slot |= bits::dirty;
                return {};
            }
            table = table_at(entry{slot}.table_address());
        }
        return {};
    }

    // Merge back: wherever a table inside `range` holds 512 leaves that map
    // contiguous frames with the same attributes, its parent maps one large
    // page instead (A and D ORed) and the table goes back to the allocator.
    result<flush> coalesce(virt_range range) noexcept {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        flush merged = flush::none();
        coalesce_in(table_at(root_), top(), 0, range, merged);
        return merged;
    }

    // Visit every table page: visit(level, phys) with level = top() for the root.
    template <class Visitor>
    void for_each_table(Visitor&& visit) const {
        visit_tables(root_, top(), visit);
    }

private:
    page_table(Alloc& frames, const Map& memory, paging_mode mode, features f, phys_addr root, bool owning) noexcept
        : frames_(&frames), memory_(&memory), mode_(mode), features_(f), root_(root), owning_(owning) {}

    // Frames taken before a change and handed out while it writes: kept as a
    // list threaded through the frames themselves, so no buffer bounds it.
    class frame_reserve {
    public:
        explicit frame_reserve(page_table& owner) noexcept : owner_(owner) {}
        frame_reserve(const frame_reserve&) = delete;
        frame_reserve& operator=(const frame_reserve&) = delete;
        ~frame_reserve() {
            while (count_ > 0) owner_.frames_->deallocate_frame(pop());
        }
        status take(std::uint64_t n) noexcept {
            for (std::uint64_t i = 0; i < n; ++i) {
                auto f = owner_.frames_->allocate_frame();
                if (!f) return failure(f.error_code());
                std::memcpy(owner_.memory_->to_virt(*f), &head_, sizeof head_);
                head_ = f->value();
                ++count_;
            }
            return {};
        }
        // A zeroed table from the reserve; the count was computed exactly.
        phys_addr pop() noexcept {
            Expects(count_ > 0);
            const phys_addr f{head_};
            std::memcpy(&head_, owner_.memory_->to_virt(f), sizeof head_);
            --count_;
            zero_frame(*owner_.memory_, f);
            return f;
        }

    private:
        page_table& owner_;
        std::uint64_t head_ = 0;
        std::uint64_t count_ = 0;
    };

    struct prepared_change {
        virt_range affected;  // the range plus every large page split to reach it
    };

    static void zero_frame(const Map& memory, phys_addr f) noexcept { std::memset(memory.to_virt(f), 0, page_bytes); }

    unsigned top() const noexcept { return levels(mode_); }
    std::uint64_t* table_at(phys_addr p) const noexcept {
        return reinterpret_cast<std::uint64_t*>(memory_->to_virt(p));
    }

    static constexpr unsigned level_of(page_size s) noexcept {
        switch (s) {
        case page_size::size_4k: return 1;
        case page_size::size_2m: return 2;
        case page_size::size_1g: return 3;
        }
        return 0;
    }
    static constexpr page_size size_of_level(unsigned level) noexcept {
        return level == 1 ? page_size::size_4k : level == 2 ? page_size::size_2m : page_size::size_1g;
    }

    // Both ends canonical and in the same half: the range has no hole inside.
    bool is_canonical_range(const virt_range& r) const noexcept {
        return is_canonical(r.start()) && is_canonical(r.last()) &&
               ((r.start().value() ^ r.last().value()) >> 63) == 0;
    }

    // The linear address of entry `index` of a table of `level` under `base`.
    std::uint64_t entry_address(std::uint64_t base, unsigned level, unsigned index) const noexcept {
        const std::uint64_t va = base + (std::uint64_t{index} << level_shift(level));
        return level == top() ? sign_extend(va, width(mode_)) : va;
    }
    // The entries of a `level` table under `base` that overlap `window`, as an
    // index range [first, last]; none when the table lies outside it.
    // Eight bytes, so it comes back in one register: a bool beside the two
    // indices made the caller reload it from the stack (a store-forwarding
    // stall on every level of every walk).
    struct index_span {
        std::uint32_t first = 1;
        std::uint32_t last = 0;  // first > last: none
        static constexpr index_span none() noexcept { return {}; }
        constexpr bool any() const noexcept { return first <= last; }
    };

    mapping leaf_mapping(entry e, unsigned level, virt_addr start, effective_rights rights) const noexcept {
        return mapping{.start = start,
                       .phys = e.leaf_address(level),
                       .size = size_of_level(level),
                       .attrs = rights.apply_to(e.leaf_attributes(level)),
                       .accessed = e.accessed(),
                       .dirty = e.dirty()};
    }

    template <class Visitor>
    static walk_control call(Visitor& visit, const auto& arg) {
        if constexpr (std::is_void_v<decltype(visit(arg))>) {
            visit(arg);
            return walk_control::proceed;
        } else {
            return visit(arg);
        }
    }

    // ---- walks ----

    // Visits the indices of `span` in walk order.
    template <class Body>
    static walk_control for_indices(index_span span, walk_order order, Body&& body) {
        if (!span.any()) return walk_control::proceed;
        if (order == walk_order::bottom_up) {
            for (unsigned i = span.first;; ++i) {
                if (body(i) == walk_control::stop) return walk_control::stop;
                if (i == span.last) break;
            }
        } else {
            for (unsigned i = span.last;; --i) {
                if (body(i) == walk_control::stop) return walk_control::stop;
                if (i == span.first) break;
            }
        }
        return walk_control::proceed;
    }

    // The index range of a table, walked in full at the top level only over
    // the canonical part of the window.
    index_span entries_in(std::uint64_t base, unsigned level, const virt_range& window) const noexcept {
        if (level != top()) {
            const auto both = intersect(virt_range::of(virt_addr{base}, entry_span(level + 1)), window);
            if (!both.any) return index_span::none();
            return {table_index(both.range.start().value(), level), table_index(both.range.last().value(), level)};
        }
        // Top level: entries 0..511 cover the lower half then the upper half.
        // Clip the window to each half and take the union of the indices.
        const unsigned half = entries_per_table / 2;
        const std::uint64_t half_bytes = std::uint64_t{half} << level_shift(level);
        const auto lower = intersect(virt_range::of(virt_addr{0}, half_bytes), window);
        const auto upper = intersect(virt_range::from_bounds(virt_addr{0 - half_bytes}, virt_addr{~std::uint64_t{0}}), window);
        if (!lower.any && !upper.any) return index_span::none();
        const unsigned first = lower.any ? table_index(lower.range.start().value(), level)
                                         : table_index(upper.range.start().value(), level);
        const unsigned last = upper.any ? table_index(upper.range.last().value(), level)
                                        : table_index(lower.range.last().value(), level);
        return {first, last};
    }

    template <class Visitor>
    walk_control walk_mappings(phys_addr table_phys, unsigned level, std::uint64_t base, const virt_range& window,
                               walk_order order, effective_rights rights, Visitor& visit) const {
        const std::uint64_t* table = table_at(table_phys);
        return for_indices(entries_in(base, level, window), order, [&](unsigned i) {
            const entry e{table[i]};
            const std::uint64_t va = entry_address(base, level, i);
            if (!e.present() || !window.overlaps(virt_range::of(virt_addr{va}, entry_span(level))))
                return walk_control::proceed;
            if (e.is_leaf(level)) return call(visit, leaf_mapping(e, level, virt_addr{va}, rights));
            return walk_mappings(e.table_address(), level - 1, va, window, order, rights.through(e), visit);
        });
    }

    // Joins adjacent free pieces into maximal gaps and hands each to the visitor.
    template <class Visitor>
    class gap_collector {
    public:
        gap_collector(Visitor& visit, walk_order order) noexcept : visit_(visit), order_(order) {}

        walk_control free(const virt_range& piece) {
            if (pending_) {
                const bool adjacent = order_ == walk_order::bottom_up ? pending_range_.end() == piece.start()
                                                                      : piece.end() == pending_range_.start();
                if (adjacent) {
                    pending_range_ = order_ == walk_order::bottom_up
                                         ? virt_range::from_bounds(pending_range_.start(), piece.last())
                                         : virt_range::from_bounds(piece.start(), pending_range_.last());
                    return walk_control::proceed;
                }
                if (finish() == walk_control::stop) return walk_control::stop;
            }
            pending_ = true;
            pending_range_ = piece;
            return walk_control::proceed;
        }
        walk_control finish() {
            if (!pending_) return walk_control::proceed;
            pending_ = false;
            return call(visit_, pending_range_);
        }
        walk_control mapped() { return finish(); }

    private:
        Visitor& visit_;
        walk_order order_;
        bool pending_ = false;
        virt_range pending_range_{};
    };

    // The sinks of walk_free_runs: free(range) for a run of free entries,
    // mapped() where a leaf interrupts the free space.
    template <class Visitor>
    struct piece_forwarder {
        Visitor& visit;
        walk_control free(const virt_range& piece) { return call(visit, piece); }
        static walk_control mapped() noexcept { return walk_control::proceed; }
    };

    // Hands each run of not-present entries of a table, clipped to the window,
    // to sink.free in walk order, and descends into present tables: one call
    // per run rather than per entry, and nothing but a load and a bit test for
    // the entries inside a run. A run never crosses a table (nor, at the top
    // level, the non-canonical hole), so consecutive runs may be adjacent.
    template <class Sink>
    walk_control walk_free_runs(phys_addr table_phys, unsigned level, std::uint64_t base, const virt_range& window,
                                walk_order order, Sink& sink) const {
        const std::uint64_t* table = table_at(table_phys);
        const auto span = entries_in(base, level, window);
        if (!span.any()) return walk_control::proceed;
        const bool up = order == walk_order::bottom_up;
        const unsigned half = entries_per_table / 2;
        bool open = false;
        unsigned run_first = 0, run_last = 0;  // in address order
        auto close_run = [&]() {
            if (!open) return walk_control::proceed;
            open = false;
            const auto first = virt_addr{entry_address(base, level, run_first)};
            const auto last = virt_addr{entry_address(base, level, run_last) + (entry_span(level) - 1)};
            const auto piece = intersect(virt_range::from_bounds(first, last), window);
            return piece.any ? sink.free(piece.range) : walk_control::proceed;
        };
        for (unsigned i = up ? span.first : span.last;; up ? ++i : --i) {
            const entry e{table[i]};
            if (!e.present()) {
                const bool crosses_hole = open && level == top() && i == (up ? half : half - 1);
                if (crosses_hole && close_run() == walk_control::stop) return walk_control::stop;
                if (!open) {
                    open = true;
                    run_first = run_last = i;
                } else if (up) {
                    run_last = i;
                } else {
                    run_first = i;
                }
            } else {
                if (close_run() == walk_control::stop) return walk_control::stop;
                const auto step = e.is_leaf(level)
                                      ? sink.mapped()
                                      : walk_free_runs(e.table_address(), level - 1, entry_address(base, level, i),
                                                       window, order, sink);
                if (step == walk_control::stop) return walk_control::stop;
            }
            if (i == (up ? span.last : span.first)) break;
        }
        return close_run();
    }

    bool any_mapping_in(const virt_range& range) const noexcept {
        bool found = false;
        auto stop_at_first = [&](const mapping&) {
            found = true;
            return walk_control::stop;
        };
        (void)walk_mappings(root_, top(), 0, range, walk_order::bottom_up, effective_rights{}, stop_at_first);
        return found;
    }
    bool any_gap_in(const virt_range& range) const noexcept {
        bool found = false;
        auto stop_at_first = [&](const virt_range&) {
            found = true;
            return walk_control::stop;
        };
        gap_collector<decltype(stop_at_first)> gaps{stop_at_first, walk_order::bottom_up};
        if (walk_free_runs(root_, top(), 0, range, walk_order::bottom_up, gaps) != walk_control::stop)
            (void)gaps.finish();
        return found;
    }

    // Calls body(slot, level, va) for every present leaf overlapping `range`.
    template <class Body>
    void for_each_leaf_slot(phys_addr table_phys, unsigned level, std::uint64_t base, const virt_range& range,
                            Body&& body) {
        std::uint64_t* table = table_at(table_phys);
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const entry e{table[i]};
            const std::uint64_t va = entry_address(base, level, i);
            if (!e.present() || !range.overlaps(virt_range::of(virt_addr{va}, entry_span(level))))
                return walk_control::proceed;
            if (e.is_leaf(level)) body(table[i], level, va);
            else for_each_leaf_slot(e.table_address(), level - 1, va, range, body);
            return walk_control::proceed;
        });
    }

    // ---- map ----

    // Tables a map of leaves at `leaf_level` over `range` must create below a
    // table of `level` (null when that table does not exist yet either).
    std::uint64_t tables_needed(phys_addr table_phys, unsigned level, const virt_range& range, unsigned leaf_level,
                                std::uint64_t base = 0, bool exists = true) const noexcept {
        if (level == leaf_level) return 0;
        const std::uint64_t* table = exists ? table_at(table_phys) : nullptr;
        std::uint64_t needed = 0;
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const std::uint64_t va = entry_address(base, level, i);
            const entry e{table ? table[i] : 0};
            if (e.present()) needed += tables_needed(e.table_address(), level - 1, range, leaf_level, va, true);
            else needed += 1 + tables_needed(phys_addr{}, level - 1, range, leaf_level, va, false);
            return walk_control::proceed;
        });
        return needed;
    }

    // `delta` turns a linear address into the physical one it maps to. A
    // present entry where a large leaf goes can only reference tables without
    // a leaf (map checked for overlaps): tables a guest emptied and kept. They
    // go back to the allocator, and the entry, which the paging-structure
    // caches may hold, is named in `replaced` (4.10.4.1).
    void map_into(std::uint64_t* table, unsigned level, const virt_range& range, std::uint64_t delta,
                  const attributes& attrs, unsigned leaf_level, frame_reserve& reserve, flush& replaced,
                  std::uint64_t base = 0) {
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const std::uint64_t va = entry_address(base, level, i);
            if (level == leaf_level) {
                const entry old{table[i]};
                table[i] = make_leaf(level, phys_addr{va + delta}, attrs).raw();
                if (old.present()) {
                    free_tables(old.table_address(), level - 1);
                    replaced.merge(flush::of(virt_range::of(virt_addr{va}, entry_span(level))));
                }
                return walk_control::proceed;
            }
            if (!entry{table[i]}.present()) table[i] = make_table_entry(reserve.pop()).raw();
            map_into(table_at(entry{table[i]}.table_address()), level - 1, range, delta, attrs, leaf_level, reserve,
                     replaced, va);
            return walk_control::proceed;
        });
    }

    // ---- the fast paths: 4 KiB pages inside one existing page table ----
    //
    // A stub moves 4 KiB runs that lie inside one page table (the common case
    // by far): one walk to that table, then the entries themselves, instead of
    // the general path's walks from the root to validate, count tables and
    // write. Anything else (a table missing on the way, a large page to
    // split, a run that crosses tables) is not_taken: the general path does
    // it, so the behaviour is the general path's in every case.
    enum class fast_path : std::uint8_t { done, not_taken, overlaps, not_mapped };

    // The walk to the page table of `va`: the table of every level on the way
    // (table[1] the page table), unless the entry at `stopped_at` is not
    // present or (stopped_on_leaf) a large leaf. The rights through the way
    // are gathered only for a walk that reports mappings (WithRights): a
    // change's walk has no use for them.
    struct table_path {
        std::uint64_t* table[6] = {};
        unsigned stopped_at = 0;
        bool stopped_on_leaf = false;
        effective_rights rights{};  // through the table entries above table[1] (or above the large leaf)
    };
    template <bool WithRights = false>
    table_path walk_to_page_table(std::uint64_t va) const noexcept {
        table_path p;
        std::uint64_t* table = table_at(root_);
        for (unsigned level = top(); level >= 2; --level) {
            p.table[level] = table;
            const entry e{table[table_index(va, level)]};
            if (!e.present() || e.is_leaf(level)) {
                p.stopped_at = level;
                p.stopped_on_leaf = e.present();
                return p;
            }
            if constexpr (WithRights) p.rights = p.rights.through(e);
            table = table_at(e.table_address());
        }
        p.table[1] = table;
        return p;
    }

    // for_each_mapping over a window inside one page table: one walk down,
    // then its entries; the same leaves, in the same order, as walk_mappings.
    template <class Visitor>
    walk_control walk_one_page_table(const virt_range& window, walk_order order, Visitor& visit) const {
        const std::uint64_t va = window.start().value();
        const table_path p = walk_to_page_table<true>(va);
        if (p.stopped_at != 0) {
            if (!p.stopped_on_leaf) return walk_control::proceed;
            const unsigned level = p.stopped_at;
            const entry e{p.table[level][table_index(va, level)]};
            const auto start = virt_addr{va}.align_down(size_of_level(level));
            return call(visit, leaf_mapping(e, level, start, p.rights));
        }
        const std::uint64_t* pt = p.table[1];
        const std::uint64_t base = va & ~(entry_span(2) - 1);
        return for_indices({table_index(va, 1), table_index(window.last().value(), 1)}, order, [&](unsigned i) {
            const entry e{pt[i]};
            if (!e.present()) return walk_control::proceed;
            return call(visit, leaf_mapping(e, 1, virt_addr{base + (std::uint64_t{i} << level_shift(1))}, p.rights));
        });
    }
    static bool in_one_page_table(const virt_range& r) noexcept {
        return (r.start().value() >> level_shift(2)) == (r.last().value() >> level_shift(2));
    }

    // Called after the input checks of map (4 KiB leaves), map_4k_pages and
    // move_4k_pages: page i of `range` to leaf_of(i).
    template <class LeafOf>
    fast_path map_in_leaf_table(const virt_range& range, LeafOf& leaf_of) noexcept {
        if (!in_one_page_table(range)) return fast_path::not_taken;
        const table_path p = walk_to_page_table(range.start().value());
        if (p.stopped_at != 0) return p.stopped_on_leaf ? fast_path::overlaps : fast_path::not_taken;
        std::uint64_t* pt = p.table[1];
        const unsigned first = table_index(range.start().value(), 1);
        const unsigned last = table_index(range.last().value(), 1);
        if (any_present(pt, first, last)) return fast_path::overlaps;
        write_leaves(pt, first, last, leaf_of);
        return fast_path::done;
    }

    // Called after unmap's input checks. Tables left empty go back to the
    // allocator from the page table up, as unmap_in does.
    fast_path unmap_in_leaf_table(const virt_range& range) noexcept {
        if (!in_one_page_table(range)) return fast_path::not_taken;
        const std::uint64_t va = range.start().value();
        const table_path p = walk_to_page_table(va);
        if (p.stopped_at != 0) return p.stopped_on_leaf ? fast_path::not_taken : fast_path::not_mapped;
        std::uint64_t* pt = p.table[1];
        const unsigned first = table_index(va, 1);
        const unsigned last = table_index(range.last().value(), 1);
        if (!all_present(pt, first, last)) return fast_path::not_mapped;
        clear_leaves(p, va, first, last);
        return fast_path::done;
    }

    // ---- the stub's pages: frames and attributes page by page ----

    struct page_leaf {
        phys_addr frame;
        attributes attrs;
    };

    // map_4k_pages' and move_4k_pages' input checks for the pages of `range`.
    template <class LeafOf>
    status check_leaves(const virt_range& range, LeafOf& leaf_of) const noexcept {
        if (!range.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!is_canonical_range(range)) return failure(error::non_canonical);
        // One pass folds every page's verdict without a branch; only a bad
        // run is walked again, page by page, for the first page's error.
        const std::uint64_t pages = range.size() / page_bytes;
        bool all_encodable = true;
        std::uint64_t offsets = 0, highest = 0;
        for (std::uint64_t i = 0; i < pages; ++i) {
            const auto& leaf = leaf_of(i);
            all_encodable &= encodable(leaf.attrs);
            offsets |= leaf.frame.value();
            highest = highest < leaf.frame.value() ? leaf.frame.value() : highest;
        }
        if (all_encodable && (offsets & (page_bytes - 1)) == 0 && phys_addr{highest + (page_bytes - 1)}.is_valid())
            return {};
        for (std::uint64_t i = 0; i < pages; ++i) {
            const auto& leaf = leaf_of(i);
            if (!encodable(leaf.attrs)) return failure(error::invalid_attributes);
            if (!leaf.frame.is_aligned(page_size::size_4k)) return failure(error::misaligned);
            if (!phys_addr{leaf.frame.value() + (page_bytes - 1)}.is_valid()) return failure(error::out_of_bounds);
        }
        return {};
    }

    // Page i of `range` to leaf_of(i): one walk when the range lies in one
    // existing page table; elsewhere, as map does, every table validated and
    // reserved first, so nothing is written unless everything succeeds.
    template <class LeafOf>
    result<flush> map_leaves(const virt_range& range, LeafOf&& leaf_of) noexcept {
        if (auto valid = check_leaves(range, leaf_of); !valid) return failure(valid.error_code());
        return map_checked_leaves(range, leaf_of);
    }
    template <class LeafOf>
    result<flush> map_checked_leaves(const virt_range& range, LeafOf& leaf_of) noexcept {
        if (const auto fast = map_in_leaf_table(range, leaf_of); fast != fast_path::not_taken) {
            if (fast == fast_path::overlaps) return failure(error::overlaps);
            return flush::none();
        }
        if (any_mapping_in(range)) return failure(error::overlaps);
        frame_reserve reserve{*this};
        if (auto r = reserve.take(tables_needed(root_, top(), range, 1)); !r) return failure(r.error_code());
        flush replaced = flush::none();
        const std::uint64_t pages = range.size() / page_bytes;
        for (std::uint64_t i = 0; i < pages; ++i) {
            const auto page = virt_range::of(range.start() + i * page_bytes, page_bytes);
            const auto& leaf = leaf_of(i);
            map_into(table_at(root_), top(), page, leaf.frame.value() - page.start().value(), leaf.attrs, 1, reserve,
                     replaced);
        }
        return replaced;
    }

    // Whole runs folded without a branch per entry (vectorised at -O3): a
    // stub's run is short and almost always passes.
    static bool any_present(const std::uint64_t* pt, unsigned first, unsigned last) noexcept {
        std::uint64_t any = 0;
        for (unsigned i = first; i <= last; ++i) any |= pt[i];
        return entry{any}.present();
    }
    static bool all_present(const std::uint64_t* pt, unsigned first, unsigned last) noexcept {
        std::uint64_t all = ~std::uint64_t{0};
        for (unsigned i = first; i <= last; ++i) all &= pt[i];
        return entry{all}.present();
    }
    // A stub's pages share a few attributes (code, data): each page's are
    // encoded only when they differ from the page before.
    template <class LeafOf>
    static void write_leaves(std::uint64_t* pt, unsigned first, unsigned last, LeafOf& leaf_of) noexcept {
        const auto& head = leaf_of(0);
        attributes attrs = head.attrs;
        std::uint64_t attr_bits = make_leaf(1, phys_addr{0}, attrs).raw();
        pt[first] = attr_bits | (head.frame.value() & leaf_address_mask(1));
        for (unsigned i = first + 1; i <= last; ++i) {
            const auto& leaf = leaf_of(i - first);
            if (!(leaf.attrs == attrs)) {
                attrs = leaf.attrs;
                attr_bits = make_leaf(1, phys_addr{0}, attrs).raw();
            }
            pt[i] = attr_bits | (leaf.frame.value() & leaf_address_mask(1));
        }
    }

    // move_4k_pages when `from` and `to` each lie in one existing page table.
    template <class LeafOf>
    fast_path move_in_leaf_tables(const virt_range& from, const virt_range& to, LeafOf& leaf_of) noexcept {
        if (!in_one_page_table(from) || !in_one_page_table(to)) return fast_path::not_taken;
        const std::uint64_t src = from.start().value(), dst = to.start().value();
        const bool one_table = (src >> level_shift(2)) == (dst >> level_shift(2));
        const table_path at_dst = walk_to_page_table(dst);
        if (at_dst.stopped_at != 0) return at_dst.stopped_on_leaf ? fast_path::overlaps : fast_path::not_taken;
        const unsigned d = table_index(dst, 1), s = table_index(src, 1);
        const unsigned n = static_cast<unsigned>(from.size() / page_bytes);
        if (any_present(at_dst.table[1], d, d + n - 1)) return fast_path::overlaps;
        table_path elsewhere;
        if (!one_table) {
            elsewhere = walk_to_page_table(src);
            if (elsewhere.stopped_at != 0)
                return elsewhere.stopped_on_leaf ? fast_path::not_taken : fast_path::not_mapped;
        }
        const table_path& at_src = one_table ? at_dst : elsewhere;
        if (!all_present(at_src.table[1], s, s + n - 1)) return fast_path::not_mapped;
        write_leaves(at_dst.table[1], d, d + n - 1, leaf_of);
        for (unsigned i = s; i < s + n; ++i) at_src.table[1][i] = 0;
        if (!one_table) free_emptied_tables(at_src, src);
        return fast_path::done;
    }

    // Entries first..last of the page table on path p (the walk to `va`)
    // cleared, and the tables left empty given back.
    void clear_leaves(const table_path& p, std::uint64_t va, unsigned first, unsigned last) noexcept {
        for (unsigned i = first; i <= last; ++i) p.table[1][i] = 0;
        free_emptied_tables(p, va);
    }

    // After an unmap in the page table of `va` (path p): that table, and the
    // tables above it, go back to the allocator for as long as they are empty.
    void free_emptied_tables(const table_path& p, std::uint64_t va) noexcept {
        for (unsigned level = 2; level <= top(); ++level) {
            std::uint64_t& slot = p.table[level][table_index(va, level)];
            const phys_addr child = entry{slot}.table_address();
            if (!table_is_empty(table_at(child))) break;
            slot = 0;
            frames_->deallocate_frame(child);
        }
    }

    // ---- unmap and protect ----

    // The leaf containing `va` with the level it sits at, if mapped.
    struct leaf_slot {
        std::uint64_t* slot = nullptr;
        unsigned level = 0;
    };
    leaf_slot find_leaf(std::uint64_t va) const noexcept {
        std::uint64_t* table = table_at(root_);
        for (unsigned level = top(); level >= 1; --level) {
            std::uint64_t& slot = table[table_index(va, level)];
            const entry e{slot};
            if (!e.present()) return {};
            if (e.is_leaf(level)) return {&slot, level};
            table = table_at(e.table_address());
        }
        return {};
    }

    // The large pages a boundary at `va` cuts: one table per level from the
    // leaf holding va down to where va is aligned. Reported as (level, base).
    struct cut {
        unsigned level = 0;
        std::uint64_t base = 0;
    };
    unsigned cuts_at(std::uint64_t va, cut (&out)[2]) const noexcept {
        const auto leaf = find_leaf(va);
        unsigned n = 0;
        for (unsigned level = leaf.level; level >= 2 && leaf.slot != nullptr; --level) {
            if ((va & (entry_span(level) - 1)) == 0) break;
            out[n++] = {level, va & ~(entry_span(level) - 1)};
        }
        return n;
    }

    // Validates an unmap or protect of `range`, reserves the tables its splits
    // need, and performs the splits (which change no translation).
    status validate(const virt_range& range) const noexcept {
        if (!range.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!is_canonical_range(range)) return failure(error::non_canonical);
        return {};
    }

    result<prepared_change> prepare_change(const virt_range& range) noexcept {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        if (any_gap_in(range)) return failure(error::not_mapped);
        const cut_list cuts = cuts_for(range);
        frame_reserve reserve{*this};
        if (auto r = reserve.take(cuts.count); !r) return failure(r.error_code());
        return prepared_change{split_all(cuts, range, reserve)};
    }

    // The large pages a change of `range` must split: at most two levels at
    // each end, listed from the larger page down.
    struct cut_list {
        cut cuts[4];
        unsigned count = 0;
    };
    cut_list cuts_for(const virt_range& range) const noexcept {
        cut_list out;
        cut at_start[2];
        cut at_end[2];
        const unsigned starts = cuts_at(range.start().value(), at_start);
        const unsigned ends = range.end().value() == 0 ? 0 : cuts_at(range.end().value(), at_end);
        for (unsigned i = 0; i < starts; ++i) out.cuts[out.count++] = at_start[i];
        for (unsigned i = 0; i < ends; ++i) {
            bool shared = false;
            for (unsigned j = 0; j < starts; ++j)
                shared = shared || (at_start[j].level == at_end[i].level && at_start[j].base == at_end[i].base);
            if (!shared) out.cuts[out.count++] = at_end[i];
        }
        return out;
    }

    // Performs the splits with `reserve` (one frame per cut): `range` plus
    // every large page split to reach it.
    virt_range split_all(const cut_list& c, const virt_range& range, frame_reserve& reserve) noexcept {
        auto affected = range;
        for (unsigned i = 0; i < c.count; ++i) {
            // Larger pages first, so each cut finds its leaf.
            split(c.cuts[i], reserve);
            const auto split_range = virt_range::of(virt_addr{c.cuts[i].base}, entry_span(c.cuts[i].level));
            affected = flush::of(affected).merge(flush::of(split_range)).range();
        }
        return affected;
    }

    // Replace the large leaf at cut.level covering cut.base with a table of 512
    // leaves one level down that map the same frames with the same attributes.
    void split(const cut& c, frame_reserve& reserve) noexcept {
        const auto leaf = find_leaf(c.base);
        Expects(leaf.slot != nullptr && leaf.level == c.level);
        const entry big{*leaf.slot};
        const phys_addr table = reserve.pop();
        std::uint64_t* small = table_at(table);
        for (unsigned i = 0; i < entries_per_table; ++i) small[i] = piece_of(big, c.level, i).raw();
        *leaf.slot = make_table_entry(table).raw();
    }

    // Whole blocks ORed into four accumulators (vectorised at -O3), one
    // branch per block: a branch per entry costs more than the loads.
    static bool table_is_empty(const std::uint64_t* table) noexcept {
        constexpr unsigned block = 64;
        for (const std::uint64_t* t = table; t != table + entries_per_table; t += block) {
            std::uint64_t any[4] = {};
            for (unsigned k = 0; k < block; k += 4)
                for (unsigned j = 0; j < 4; ++j) any[j] |= t[k + j];
            if (((any[0] | any[1]) | (any[2] | any[3])) != 0) return false;
        }
        return true;
    }

    // After the splits, every leaf overlapping the range lies inside it.
    void unmap_in(std::uint64_t* table, unsigned level, const virt_range& range, std::uint64_t base = 0) noexcept {
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const entry e{table[i]};
            const std::uint64_t va = entry_address(base, level, i);
            if (!e.present()) return walk_control::proceed;
            if (e.is_leaf(level)) {
                table[i] = 0;
                return walk_control::proceed;
            }
            std::uint64_t* child = table_at(e.table_address());
            unmap_in(child, level - 1, range, va);
            if (table_is_empty(child)) {
                table[i] = 0;
                frames_->deallocate_frame(e.table_address());
            }
            return walk_control::proceed;
        });
    }

    void protect_in(std::uint64_t* table, unsigned level, const virt_range& range, const attributes& attrs,
                    std::uint64_t base = 0) noexcept {
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const entry e{table[i]};
            const std::uint64_t va = entry_address(base, level, i);
            if (!e.present()) return walk_control::proceed;
            if (e.is_leaf(level)) {
                const entry leaf = make_leaf(level, e.leaf_address(level), attrs, e.accessed(), e.dirty());
                table[i] = leaf.with(e.raw() & bits::software).raw();
                return walk_control::proceed;
            }
            protect_in(table_at(e.table_address()), level - 1, range, attrs, va);
            return walk_control::proceed;
        });
    }

    // ---- coalesce ----

    // The large leaf a table of `level` could become, or none. The leaves
    // must agree on every bit but the address, A and D (software bits too,
    // or merging would lose a guest's bookkeeping).
    struct merge_candidate {
        bool possible = false;
        entry leaf;
    };
    merge_candidate mergeable(const std::uint64_t* table, unsigned level) const noexcept {
        const entry first{table[0]};
        if (!first.present() || !first.is_leaf(level)) return {};
        const phys_addr frame = first.leaf_address(level);
        if (!frame.is_aligned(size_of_level(level + 1))) return {};
        constexpr std::uint64_t same = ~(bits::address | bits::accessed | bits::dirty);
        bool accessed = false;
        bool dirty = false;
        for (unsigned i = 0; i < entries_per_table; ++i) {
            const entry e{table[i]};
            if (!e.present() || !e.is_leaf(level) || e.leaf_address(level) != frame + std::uint64_t{i} * entry_span(level) ||
                (e.raw() & same) != (first.raw() & same) || e.pat(level) != first.pat(level))
                return {};
            accessed = accessed || e.accessed();
            dirty = dirty || e.dirty();
        }
        return {true, whole_of(first, level, accessed, dirty)};
    }

    void coalesce_in(std::uint64_t* table, unsigned level, std::uint64_t base, const virt_range& range,
                     flush& merged) noexcept {
        if (level < 2) return;
        (void)for_indices(entries_in(base, level, range), walk_order::bottom_up, [&](unsigned i) {
            const entry e{table[i]};
            const std::uint64_t va = entry_address(base, level, i);
            if (!e.present() || e.is_leaf(level)) return walk_control::proceed;
            std::uint64_t* child = table_at(e.table_address());
            coalesce_in(child, level - 1, va, range, merged);
            const auto span = virt_range::of(virt_addr{va}, entry_span(level));
            const bool may_be_leaf = level == 2 || (level == 3 && features_.pages_1g);
            if (!may_be_leaf || !range.contains(span) || !is_permissive_table_entry(e)) return walk_control::proceed;
            if (const auto candidate = mergeable(child, level - 1); candidate.possible) {
                table[i] = candidate.leaf.raw();
                frames_->deallocate_frame(e.table_address());
                merged.merge(flush::of(span));
            }
            return walk_control::proceed;
        });
    }

    // ---- tables as a whole ----

    template <class Visitor>
    void visit_tables(phys_addr table_phys, unsigned level, Visitor& visit) const {
        visit(level, table_phys);
        if (level == 1) return;
        const std::uint64_t* table = table_at(table_phys);
        for (unsigned i = 0; i < entries_per_table; ++i) {
            const entry e{table[i]};
            if (e.present() && !e.is_leaf(level)) visit_tables(e.table_address(), level - 1, visit);
        }
    }

    void free_tables(phys_addr table_phys, unsigned level) noexcept {
        if (level > 1) {
            const std::uint64_t* table = table_at(table_phys);
            for (unsigned i = 0; i < entries_per_table; ++i) {
                const entry e{table[i]};
                if (e.present() && !e.is_leaf(level)) free_tables(e.table_address(), level - 1);
            }
        }
        frames_->deallocate_frame(table_phys);
    }

    void release() noexcept {
        if (owning_) free_tables(root_, top());
        owning_ = false;
    }

    Alloc* frames_;
    const Map* memory_;
    paging_mode mode_;
    features features_;
    phys_addr root_;
    bool owning_;
};

}  // namespace asreloc::x86_64
