// Best-fit region finder: the smallest range free in every space that fits the
// request (ties: the lowest), placed at its lowest fitting address. It keeps
// large gaps whole for later, at the price of a full walk of the window.
#pragma once

#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/common_gaps.hpp"
#include "asreloc/policy/region_finder.hpp"

namespace asreloc {

struct best_fit_finder {
    template <page_table P>
    result<virt_range> find_free(std::span<const P* const> spaces, const region_request& request) const {
        if (auto ok = policy_detail::check_request(spaces.size(), request); !ok) return failure(ok.error_code());
        virt_range window;
        if (!policy_detail::page_window(request.window, window)) return failure(error::no_free_range);
        const std::uint64_t least = policy_detail::least_gap(request);
        if constexpr (sized_gap_walk<P>) {
            // One indexed space hands its gaps out smallest first: the first
            // that fits is the answer.
            if (spaces.size() == 1) return first_that_fits_by_size(*spaces[0], window, least, request);
        }
        bool found = false;
        std::uint64_t best_size_minus1 = 0;
        virt_addr best;
        auto visit = [&](const virt_range& gap) {
            virt_addr at;
            const std::uint64_t s = gap.last() - gap.start();  // size - 1: never overflows
            // Ascending walk: a strictly smaller gap wins, an equal one keeps the lower.
            if ((!found || s < best_size_minus1) && policy_detail::fit_lowest(gap, request, at)) {
                found = true;
                best_size_minus1 = s;
                best = at;
            }
            return walk_control::proceed;
        };
        auto walked = policy_detail::walk_common_gaps<P>(spaces, 0, window, walk_order::bottom_up, least, visit);
        return policy_detail::answer(walked, found, best, request.size);
    }

private:
    template <sized_gap_walk P>
    static result<virt_range> first_that_fits_by_size(const P& space, const virt_range& window, std::uint64_t least,
                                                      const region_request& request) {
        bool found = false;
        virt_addr at;
        auto visit = [&](const virt_range& gap) {
            found = policy_detail::fit_lowest(gap, request, at);
            return found ? walk_control::stop : walk_control::proceed;
        };
        auto walked = space.for_each_gap_by_size(window, least, visit);
        return policy_detail::answer(walked, found, at, request.size);
    }
};

}  // namespace asreloc
