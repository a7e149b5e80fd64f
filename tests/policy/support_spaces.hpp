// Helpers shared by the policy tests: reference spaces with a few mappings.
#pragma once

#include <catch2/catch.hpp>

#include "asreloc/reference/page_table.hpp"

namespace asreloc::test {

inline void map_4k(reference::page_table& pt, std::uint64_t start, std::uint64_t pages) {
    auto r = pt.map(virt_range::of(virt_addr{start}, pages * page_bytes), phys_addr{0x100000}, read_write,
                    page_size::size_4k);
    REQUIRE(r.has_value());
}

}  // namespace asreloc::test
