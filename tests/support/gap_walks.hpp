// The gaps a space's own walk reports, as a list: what the tests compare an
// index against.
#pragma once

#include <catch2/catch.hpp>

#include <vector>

#include "asreloc/core/address.hpp"
#include "asreloc/paging/mapping.hpp"

namespace asreloc::test {

inline std::vector<virt_range> gaps_of(const auto& space, const virt_range& window = virt_range::everything(),
                                       walk_order order = walk_order::bottom_up) {
    std::vector<virt_range> out;
    auto r = space.for_each_gap(window, order, [&](const virt_range& g) {
        out.push_back(g);
        return walk_control::proceed;
    });
    REQUIRE(r.has_value());
    return out;
}

}  // namespace asreloc::test
