// A page table with its free space indexed: wraps any page_table, passes every
// operation through, and keeps a gap_index in step with the maps and unmaps
// made through it. Finders given it answer from the index (sized_gap_walk)
// instead of walking the tables, so a search costs O(log n) in the number of
// free ranges, whatever the size and population of the space.
//
// The index knows only the changes made through this object: tables written
// behind its back (or filled before it was made) need rebuild().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/gap_index.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/page_table.hpp"

namespace asreloc {

template <page_table P>
class indexed_page_table {
public:
    using node = gap_index::node;

    // Indexes `table` as it is now, in `storage` (one node per maximal free
    // range of the table, plus one). Errors: capacity_exceeded (storage too
    // small for the table's free ranges), and the table's own walk errors.
    static result<indexed_page_table> over(P& table, std::span<node> storage) {
        indexed_page_table t(table, storage);
        if (auto built = t.rebuild(); !built) return failure(built.error_code());
        return t;
    }

    indexed_page_table(indexed_page_table&&) noexcept = default;
    indexed_page_table(const indexed_page_table&) = delete;
    indexed_page_table& operator=(const indexed_page_table&) = delete;
    indexed_page_table& operator=(indexed_page_table&&) = delete;

    // The nodes an index of `table` as it is now needs: one per maximal free
    // range, plus one for a change. Errors: the table's walk errors.
    static result<std::size_t> nodes_for(const P& table) {
        std::size_t gaps = 0;
        auto counted = table.for_each_gap(virt_range::everything(), walk_order::bottom_up, [&](const virt_range&) {
            ++gaps;
            return walk_control::proceed;
        });
        if (!counted) return failure(counted.error_code());
        return gaps + 1;
    }

    // Re-reads the free space from the table. On capacity_exceeded the index
    // is as before.
    status rebuild() {
        auto needed = nodes_for(*table_);
        if (!needed) return failure(needed.error_code());
        if (*needed > index_.capacity()) return failure(error::capacity_exceeded);
        index_.clear();
        (void)table_->for_each_gap(virt_range::everything(), walk_order::bottom_up, [&](const virt_range& gap) {
            index_.add_free(gap);
            return walk_control::proceed;
        });
        return {};
    }

    P& table() noexcept { return *table_; }
    const P& table() const noexcept { return *table_; }
    const gap_index& index() const noexcept { return index_; }

    // ---- page_table ----

    result<translation> translate(virt_addr va) const { return table_->translate(va); }

    // As P::map; also capacity_exceeded when the index has no node to spare
    // (nothing changed).
    result<flush> map(virt_range range, phys_addr phys, attributes attrs, page_size size) {
        return change(range, now::used, [&] { return table_->map(range, phys, attrs, size); });
    }

    // P's map of 4 KiB pages to scattered frames (the manager's stub map),
    // where P has one; also capacity_exceeded as for map.
    template <class FrameOf>
    result<flush> map_4k_pages(virt_range range, attributes attrs, FrameOf&& frame_of)
        requires requires(P& p) { p.map_4k_pages(range, attrs, frame_of); }
    {
        return change(range, now::used, [&] { return table_->map_4k_pages(range, attrs, frame_of); });
    }

    // P's move of 4 KiB pages (the manager's stub move), where P has one:
    // `to` leaves the free space and `from` joins it. Also capacity_exceeded
    // unless the index has a node to spare for each (nothing changed).
    template <class LeafOf>
    result<flush> move_4k_pages(virt_range from, virt_range to, LeafOf&& leaf_of)
        requires requires(P& p) { p.move_4k_pages(from, to, leaf_of); }
    {
        if (!index_.has_room(2)) return failure(error::capacity_exceeded);
        auto done = table_->move_4k_pages(from, to, leaf_of);
        if (!done) return done;
        index_.remove_free(to);
        index_.add_free(from);
        return done;
    }

    // As P::unmap; also capacity_exceeded as for map.
    result<flush> unmap(virt_range range) {
        return change(range, now::free, [&] { return table_->unmap(range); });
    }

    result<flush> protect(virt_range range, attributes attrs) { return table_->protect(range, attrs); }

    template <class Visit>
    result<walk_control> for_each_mapping(virt_range window, walk_order order, Visit&& visit) const {
        return table_->for_each_mapping(window, order, visit);
    }

    template <class Visit>
    result<walk_control> for_each_gap(virt_range window, walk_order order, Visit&& visit) const {
        return for_each_gap_at_least(window, order, 0, visit);
    }

    bool is_canonical(virt_addr va) const { return table_->is_canonical(va); }

    // ---- sized_gap_walk ----

    template <class Visit>
    result<walk_control> for_each_gap_at_least(virt_range window, walk_order order, std::uint64_t min_bytes,
                                               Visit&& visit) const {
        if (!page_aligned(window)) return failure(error::misaligned);
        return index_.for_each_gap_at_least(window, order, min_bytes, visit);
    }

    template <class Visit>
    result<walk_control> for_each_gap_by_size(virt_range window, std::uint64_t min_bytes, Visit&& visit) const {
        if (!page_aligned(window)) return failure(error::misaligned);
        return index_.for_each_gap_by_size(window, min_bytes, visit);
    }

    // ---- accessed_dirty_page_table, where P is one ----

    result<ad_sample> query_and_clear(virt_range range, ad_bits bits)
        requires accessed_dirty_page_table<P>
    {
        return table_->query_and_clear(range, bits);
    }

private:
    enum class now : std::uint8_t { used, free };

    // A change of the table that leaves `range` wholly used or wholly free,
    // recorded in the index when the table made it; refused up front when
    // the index could not record it.
    template <class Change>
    result<flush> change(virt_range range, now state, Change&& make_it) {
        if (!index_.has_room()) return failure(error::capacity_exceeded);
        auto done = make_it();
        if (!done) return done;
        if (state == now::used) index_.remove_free(range);
        else index_.add_free(range);
        return done;
    }

    indexed_page_table(P& table, std::span<node> storage) : table_(&table), index_(storage) {}

    static constexpr bool page_aligned(const virt_range& w) noexcept {
        return is_aligned(w.start().value(), page_bytes) &&
               (w.last().value() == ~std::uint64_t{0} || is_aligned(w.last().value() + 1, page_bytes));
    }

    P* table_;
    gap_index index_;
};

}  // namespace asreloc
