// First-fit region finders: the lowest (bottom-up) or highest (top-down) range
// free in every space that satisfies a request. Each stops as soon as the free
// space it has seen fits, so the walk is usually short.
#pragma once

#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/common_gaps.hpp"
#include "asreloc/policy/region_finder.hpp"

namespace asreloc {

template <walk_order Order>
struct first_fit_finder {
    // The order it searches in: a caller that splits a window into parts
    // asks them in this order too (the manager around a conflict).
    static constexpr walk_order order = Order;

    template <page_table P>
    result<virt_range> find_free(std::span<const P* const> spaces, const region_request& request) const {
        if (auto ok = policy_detail::check_request(spaces.size(), request); !ok) return failure(ok.error_code());
        virt_range window;
        if (!policy_detail::page_window(request.window, window)) return failure(error::no_free_range);
        const std::uint64_t least = policy_detail::least_gap(request);
        bool found = false;
        virt_addr at;
        auto fits = [&](const virt_range& free) {
            found = Order == walk_order::bottom_up ? policy_detail::fit_lowest(free, request, at)
                                                   : policy_detail::fit_highest(free, request, at);
            return found ? walk_control::stop : walk_control::proceed;
        };
        // One indexed space hands out whole gaps, only those wide enough.
        if constexpr (sized_gap_walk<P>) {
            if (spaces.size() == 1) {
                auto walked = spaces[0]->for_each_gap_at_least(window, Order, least, fits);
                return policy_detail::answer(walked, found, at, request.size);
            }
        }
        // A first fit depends only on the gap's near end (its start bottom-up,
        // its end top-down) and on enough room after it, so it can be judged
        // on the run of free space seen so far: the search stops as soon as
        // that run fits, not at the far end of the gap.
        policy_detail::free_run run{Order};
        auto visit = [&](const virt_range& piece) { return fits(run.add(piece)); };
        auto walked = policy_detail::walk_common_free_pieces<P>(spaces, 0, window, Order, least, visit);
        return policy_detail::answer(walked, found, at, request.size);
    }
};

using bottom_up_finder = first_fit_finder<walk_order::bottom_up>;
using top_down_finder = first_fit_finder<walk_order::top_down>;

}  // namespace asreloc
