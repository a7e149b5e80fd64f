// A window with ranges left out (manager/excluded_ranges.hpp): what the
// manager's searches and guest unmaps see around the stub.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "asreloc/manager/excluded_ranges.hpp"

using namespace asreloc;

namespace {

constexpr std::uint64_t top = ~std::uint64_t{0};

constexpr virt_range bounds(std::uint64_t first, std::uint64_t last) {
    return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
}

template <std::size_t N>
std::vector<virt_range> parts(const range_parts<N>& p) {
    return {p.part, p.part + p.count};
}

}  // namespace

TEST_CASE("nothing excluded leaves the whole window") {
    const excluded_ranges<2> none;
    CHECK(parts(none.parts_of(bounds(0x1000, 0x9fff))) == std::vector{bounds(0x1000, 0x9fff)});
}

TEST_CASE("excluded ranges cut the window into the parts between them, added in any order") {
    excluded_ranges<3> x;
    x.add(bounds(0x6000, 0x6fff));
    x.add(bounds(0x2000, 0x2fff));
    CHECK_FALSE(x.full());
    x.add(bounds(0x4000, 0x4fff));
    CHECK(x.full());
    CHECK(x.size() == 3);
    CHECK(parts(x.parts_of(bounds(0x1000, 0x9fff))) ==
          std::vector{bounds(0x1000, 0x1fff), bounds(0x3000, 0x3fff), bounds(0x5000, 0x5fff), bounds(0x7000, 0x9fff)});
}

TEST_CASE("excluded ranges at the window's edges, outside it or across it leave no empty part") {
    excluded_ranges<2> edges;
    edges.add(bounds(0x0, 0x1fff));     // covers the window's start
    edges.add(bounds(0x8000, 0xffff));  // covers its end
    CHECK(parts(edges.parts_of(bounds(0x1000, 0x9fff))) == std::vector{bounds(0x2000, 0x7fff)});

    excluded_ranges<1> outside;
    outside.add(bounds(0x20000, 0x20fff));
    CHECK(parts(outside.parts_of(bounds(0x1000, 0x9fff))) == std::vector{bounds(0x1000, 0x9fff)});

    excluded_ranges<1> across;
    across.add(bounds(0x0, 0xffff));
    CHECK(across.parts_of(bounds(0x1000, 0x9fff)).count == 0);
}

TEST_CASE("overlapping excluded ranges are left out as their union") {
    excluded_ranges<3> x;
    x.add(bounds(0x2000, 0x5fff));
    x.add(bounds(0x3000, 0x3fff));  // inside the first
    x.add(bounds(0x5000, 0x6fff));  // overlaps its end
    CHECK(parts(x.parts_of(bounds(0x1000, 0x9fff))) == std::vector{bounds(0x1000, 0x1fff), bounds(0x7000, 0x9fff)});
}

TEST_CASE("a window or an excluded range at the top of the space does not wrap") {
    excluded_ranges<1> high;
    high.add(bounds(top - 0xfff, top));
    CHECK(parts(high.parts_of(bounds(top - 0x3fff, top))) == std::vector{bounds(top - 0x3fff, top - 0x1000)});

    excluded_ranges<1> low;
    low.add(bounds(top - 0x3fff, top - 0x3000));
    CHECK(parts(low.parts_of(bounds(top - 0x3fff, top))) == std::vector{bounds(top - 0x2fff, top)});
}
