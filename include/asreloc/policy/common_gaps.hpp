// Shared pieces of the region finders: request validation, the walk of the
// ranges free in every space of a span (nested gap walks, so the cost follows
// the populated tables), and the fit of a request into one such range.
#pragma once

#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/region_finder.hpp"

namespace asreloc::policy_detail {

constexpr bool is_power_of_two(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

constexpr status check_request(std::size_t spaces, const region_request& r) noexcept {
    if (spaces == 0 || r.size == 0) return failure(error::empty_range);
    if (!is_aligned(r.size, page_bytes) || !is_aligned(r.guard, page_bytes) || !is_power_of_two(r.alignment) ||
        r.alignment < page_bytes)
        return failure(error::misaligned);
    return {};
}

// The 4 KiB pages wholly inside `window`, as a range the walks accept; false
// when the window holds no whole page.
constexpr bool page_window(const virt_range& window, virt_range& out) noexcept {
    const std::uint64_t first = window.start().value();
    const std::uint64_t start = (first + page_bytes - 1) & ~(page_bytes - 1);
    if (start < first) return false;  // wrapped past 2^64
    const std::uint64_t end_excl_minus1 = window.last().value();
    const std::uint64_t last_page = (end_excl_minus1 + 1) & ~(page_bytes - 1);  // 0 when last == ~0
    std::uint64_t last;
    if (end_excl_minus1 == ~std::uint64_t{0}) last = end_excl_minus1;
    else if (last_page == 0) return false;
    else last = last_page - 1;
    if (last < start || last - start < page_bytes - 1) return false;
    out = virt_range::from_bounds(virt_addr{start}, virt_addr{last});
    return true;
}

// A finder's answer after its walk: the walk's error, else no_free_range
// when nothing fitted, else `size` bytes at `at`.
inline result<virt_range> answer(const result<walk_control>& walked, bool found, virt_addr at,
                                 std::uint64_t size) noexcept {
    if (!walked) return failure(walked.error_code());
    if (!found) return failure(error::no_free_range);
    return virt_range::of(at, size);
}

// The least free space that can hold `r`: the stub and a guard each side
// (saturating: a request that large fits nowhere anyway).
constexpr std::uint64_t least_gap(const region_request& r) noexcept {
    const std::uint64_t guards = r.guard > ~std::uint64_t{0} / 2 ? ~std::uint64_t{0} : 2 * r.guard;
    return r.size > ~std::uint64_t{0} - guards ? ~std::uint64_t{0} : r.size + guards;
}

// How the last space of a common-gap walk reports its free space: maximal
// gaps, or pieces (see piecewise_gap_walk) where its backend can.
enum class last_space_walk : std::uint8_t { gaps, pieces };

// One space's maximal gaps inside `range`; a space that indexes its free
// space by size (sized_gap_walk) skips those narrower than `least`, which
// cannot hold the request and so cannot either once intersected with the
// other spaces' gaps.
template <class P, class Visit>
result<walk_control> gaps_of(const P& space, const virt_range& range, walk_order order, std::uint64_t least,
                             Visit& visit) {
    if constexpr (sized_gap_walk<P>) return space.for_each_gap_at_least(range, order, least, visit);
    else return space.for_each_gap(range, order, visit);
}

// Calls visit(range) for the free space inside `range` common to spaces[i..],
// in the order asked; visit answers walk_control. Every space but the last
// reports maximal gaps and the next space is walked inside each; the last
// reports as `Last` says, so with pieces, visit sees the free space in pieces
// that may be adjacent and must join them itself. Ranges narrower than
// `least` may be left out. spaces[i..] is not empty.
template <last_space_walk Last, class P, class Visit>
result<walk_control> walk_common_free(std::span<const P* const> spaces, std::size_t i, const virt_range& range,
                                      walk_order order, std::uint64_t least, Visit& visit) {
    if (i + 1 == spaces.size()) {
        if constexpr (Last == last_space_walk::pieces && piecewise_gap_walk<P> && !sized_gap_walk<P>)
            return spaces[i]->for_each_free_piece(range, order, visit);
        else
            return gaps_of(*spaces[i], range, order, least, visit);
    }
    bool failed = false;
    error code{};
    auto next_space = [&](const virt_range& gap) {
        auto sub = walk_common_free<Last>(spaces, i + 1, gap, order, least, visit);
        if (!sub) {
            failed = true;
            code = sub.error_code();
            return walk_control::stop;
        }
        return *sub;
    };
    auto r = gaps_of(*spaces[i], range, order, least, next_space);
    if (failed) return failure(code);
    return r;
}

// Each maximal range free in every one of spaces[i..] (those narrower than
// `least` may be left out).
template <class P, class Visit>
result<walk_control> walk_common_gaps(std::span<const P* const> spaces, std::size_t i, const virt_range& range,
                                      walk_order order, std::uint64_t least, Visit& visit) {
    return walk_common_free<last_space_walk::gaps, P>(spaces, i, range, order, least, visit);
}

// The same free space, the last space handing it out in pieces where its
// backend can.
template <class P, class Visit>
result<walk_control> walk_common_free_pieces(std::span<const P* const> spaces, std::size_t i, const virt_range& range,
                                             walk_order order, std::uint64_t least, Visit& visit) {
    return walk_common_free<last_space_walk::pieces, P>(spaces, i, range, order, least, visit);
}

// Joins free pieces that arrive in walk order into the run that holds the
// latest one.
class free_run {
public:
    explicit constexpr free_run(walk_order order) noexcept : order_(order) {}

    constexpr const virt_range& add(const virt_range& piece) noexcept {
        const bool adjacent = open_ && (order_ == walk_order::bottom_up ? run_.end() == piece.start()
                                                                       : piece.end() == run_.start());
        if (!adjacent) run_ = piece;
        else if (order_ == walk_order::bottom_up) run_ = virt_range::from_bounds(run_.start(), piece.last());
        else run_ = virt_range::from_bounds(piece.start(), run_.last());
        open_ = true;
        return run_;
    }

private:
    walk_order order_;
    bool open_ = false;
    virt_range run_{};
};

// Where `r` fits in `gap` (guards inside the gap), lowest or highest start.
// False when it does not fit. All arithmetic is checked against wrap-around.
constexpr bool fit_lowest(const virt_range& gap, const region_request& r, virt_addr& out) noexcept {
    const std::uint64_t lo = gap.start().value(), hi = gap.last().value();
    if (hi - lo < r.guard) return false;
    const std::uint64_t after_guard = lo + r.guard;
    const std::uint64_t start = (after_guard + r.alignment - 1) & ~(r.alignment - 1);
    if (start < after_guard) return false;  // wrapped
    if (start > hi) return false;
    const std::uint64_t room = hi - start;  // bytes after start, minus one
    if (room < r.size - 1) return false;
    if (room - (r.size - 1) < r.guard) return false;
    out = virt_addr{start};
    return true;
}

constexpr bool fit_highest(const virt_range& gap, const region_request& r, virt_addr& out) noexcept {
    const std::uint64_t lo = gap.start().value(), hi = gap.last().value();
    const std::uint64_t span_minus1 = hi - lo;
    if (span_minus1 < r.guard) return false;
    const std::uint64_t top = hi - r.guard;  // last byte the range may use
    if (top - lo < r.size - 1) return false;
    const std::uint64_t start = (top - (r.size - 1)) & ~(r.alignment - 1);
    if (start < lo || start - lo < r.guard) return false;
    out = virt_addr{start};
    return true;
}

}  // namespace asreloc::policy_detail
