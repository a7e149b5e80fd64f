// The page-table concept: what the policies and the manager need from an
// address space. The x86-64 backend (asreloc/x86_64/page_table.hpp) and the
// reference model (asreloc/reference/page_table.hpp) both satisfy it; a
// hypervisor with its own page-table code satisfies it with an adapter.
//
// Contract for every implementation:
// - Single-threaded per space: the embedder serialises calls on one space.
// - Every change returns a flush naming the range whose translations changed;
//   nothing is invalidated behind the caller's back.
// - On every error the tables are exactly as before the call and every frame
//   taken from the allocator for the call has been given back.
// - Ranges and sizes are in bytes; "aligned" means aligned to the page size the
//   operation names (4 KiB where it names none).
#pragma once

#include <concepts>
#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/mapping.hpp"

namespace asreloc {

// Callbacks a walk takes: one per leaf mapping, one per maximal gap.
struct mapping_visitor_archetype {
    walk_control operator()(const mapping&) const noexcept { return walk_control::proceed; }
};
struct gap_visitor_archetype {
    walk_control operator()(const virt_range&) const noexcept { return walk_control::proceed; }
};

// translate(va)
//   The page holding va and the physical address va maps to.
//   Errors: non_canonical, not_mapped.  Cost: one walk, no allocation.
// map(range, phys, attrs, size)
//   Maps every page of `range` (pages of `size`) to consecutive frames from
//   `phys`. Refuses to replace anything: the guest's mappings are never lost.
//   Errors: empty_range, misaligned (range or phys not `size`-aligned),
//   non_canonical, overlaps (some page of range already mapped),
//   unsupported_page_size, invalid_attributes, out_of_frames.
//   Returns the range to invalidate (empty when only not-present entries
//   became present and no large page was split).
// unmap(range)
//   Removes every mapping in `range` (4 KiB aligned), splitting a large page
//   that is only partly covered; frees page-table pages left empty.
//   Errors: empty_range, misaligned, non_canonical, not_mapped (some 4 KiB
//   page of range is not mapped), out_of_frames (a split needed a table).
// protect(range, attrs)
//   Gives every page in `range` the attributes `attrs`, keeping its frame;
//   splits large pages at the ends. Errors as unmap, plus invalid_attributes.
// for_each_mapping(window, order, visit)
//   Calls visit(const mapping&) for each leaf overlapping `window`, ascending
//   (bottom_up) or descending (top_down), until visit answers stop; a leaf is
//   reported whole even where it sticks out of the window.
// for_each_gap(window, order, visit)
//   Calls visit(const virt_range&) for each maximal canonical range inside
//   `window` (clipped to it) where nothing is mapped, in the order asked.
//   Both walks cost in proportion to the populated part of the tree within
//   the window, never to the size of the window.
//   Walk errors: misaligned window. A walk answers walk_control::stop when a
//   visitor stopped it, proceed when it reached the end of the window.
// is_canonical(va)
//   Whether the space can map va at all (its paging mode's canonical halves).
template <class P>
concept page_table = requires(P& pt, const P& cpt, virt_addr va, phys_addr pa, virt_range r, attributes a,
                              page_size s, walk_order o, mapping_visitor_archetype mv,
                              gap_visitor_archetype gv) {
    { cpt.translate(va) } -> std::same_as<result<translation>>;
    { pt.map(r, pa, a, s) } -> std::same_as<result<flush>>;
    { pt.unmap(r) } -> std::same_as<result<flush>>;
    { pt.protect(r, a) } -> std::same_as<result<flush>>;
    { cpt.for_each_mapping(r, o, mv) } -> std::same_as<result<walk_control>>;
    { cpt.for_each_gap(r, o, gv) } -> std::same_as<result<walk_control>>;
    { cpt.is_canonical(va) } -> std::same_as<bool>;
};

// The refinement for backends that can hand out free space before they know
// where a gap ends (the x86-64 backend: one piece per run of not-present
// entries of a table).
// for_each_free_piece(window, order, visit)
//   Calls visit(const virt_range&) with pieces of the free space inside
//   `window`, in the order asked: every free byte in exactly one piece,
//   pieces never overlapping, adjacent pieces possibly reported apart. A
//   first-fit search joins them as they come and stops as soon as the run it
//   holds fits, instead of walking to the far end of a long gap first.
//   Errors: misaligned window.
template <class P>
concept piecewise_gap_walk = page_table<P> && requires(const P& cpt, virt_range r, walk_order o,
                                                       gap_visitor_archetype gv) {
    { cpt.for_each_free_piece(r, o, gv) } -> std::same_as<result<walk_control>>;
};

// The refinement for spaces that index their free space (indexed_page_table):
// a search for n bytes never visits the narrower gaps.
// for_each_gap_at_least(window, order, min_bytes, visit)
//   As for_each_gap, but only the gaps whose part inside `window` is at least
//   `min_bytes` long.
// for_each_gap_by_size(window, min_bytes, visit)
//   The same gaps, smallest first (ties: the lowest), so the first one a
//   best-fit search can use is its answer.
//   Errors: misaligned window.
template <class P>
concept sized_gap_walk = page_table<P> && requires(const P& cpt, virt_range r, walk_order o, std::uint64_t n,
                                                   gap_visitor_archetype gv) {
    { cpt.for_each_gap_at_least(r, o, n, gv) } -> std::same_as<result<walk_control>>;
    { cpt.for_each_gap_by_size(r, n, gv) } -> std::same_as<result<walk_control>>;
};

// Members the manager uses when a backend has them, each doing what calls of
// the concept would do, with fewer walks (the x86-64 backend has both;
// indexed_page_table passes them through):
// map_4k_pages(range, attrs, frame_of)
//   map of each 4 KiB page i of `range` to frame_of(i), all or nothing.
// move_4k_pages(from, to, leaf_of)
//   The stub's move in one call: page i of `to` to leaf_of(i).frame with
//   leaf_of(i).attrs, then unmap(from), all or nothing; overlaps when
//   anything is mapped in `to` (answered before a hole in `from`).

// The summary of one accessed/dirty harvest over a range, in 4 KiB pages (a
// large page counts for the 4 KiB pages of it that lie in the range).
struct ad_sample {
    std::uint64_t accessed_pages = 0;
    std::uint64_t dirty_pages = 0;
    flush invalidate = flush::none();  // clearing A/D needs the TLB to forget it
};

// The refinement for backends whose entries carry accessed/dirty bits.
// query_and_clear(range, bits)
//   Counts the pages of `range` whose A and D bits are set, then clears the
//   bits named by `bits` (so the next harvest sees only new accesses).
//   Unmapped parts of the range are skipped, not an error.
//   Errors: empty_range, misaligned, non_canonical.
template <class P>
concept accessed_dirty_page_table = page_table<P> && requires(P& pt, virt_range r, ad_bits b) {
    { pt.query_and_clear(r, b) } -> std::same_as<result<ad_sample>>;
};

}  // namespace asreloc
