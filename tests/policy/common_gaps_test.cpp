// The arithmetic the region finders share (policy/common_gaps.hpp), at the
// edges the finders' own tests reach only by chance: windows and gaps at the
// top of the 64-bit space, where a careless sum wraps to 0.
#include <catch2/catch.hpp>

#include <cstdint>

#include "asreloc/policy/common_gaps.hpp"

using namespace asreloc;
using namespace asreloc::policy_detail;

namespace {

constexpr std::uint64_t top = ~std::uint64_t{0};

constexpr virt_range bounds(std::uint64_t first, std::uint64_t last) {
    return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
}

}  // namespace

TEST_CASE("page_window keeps the whole 4 KiB pages of a window, none when it holds no whole page") {
    virt_range out{};
    CHECK(page_window(bounds(0x1001, 0x3fff), out));
    CHECK(out == bounds(0x2000, 0x3fff));
    CHECK(page_window(bounds(0x1000, 0x1fff), out));
    CHECK(out == bounds(0x1000, 0x1fff));
    CHECK(page_window(bounds(0x1000, 0x3ffe), out));
    CHECK(out == bounds(0x1000, 0x2fff));

    out = bounds(0x5000, 0x5fff);
    CHECK_FALSE(page_window(bounds(0x1001, 0x2ffe), out));  // a page's worth, but no whole page
    CHECK_FALSE(page_window(bounds(0, 0xffe), out));
    CHECK(out == bounds(0x5000, 0x5fff));  // untouched when false
}

TEST_CASE("page_window handles a window that ends at or starts in the last page of the space") {
    virt_range out{};
    CHECK(page_window(bounds(top - 0x1fff, top), out));
    CHECK(out == bounds(top - 0x1fff, top));
    CHECK(page_window(bounds(top - 0x2ffe, top), out));  // rounds up to the last two pages
    CHECK(out == bounds(top - 0x1fff, top));
    CHECK_FALSE(page_window(bounds(top - 0xffe, top), out));  // rounding up wraps past 2^64
}

TEST_CASE("least_gap is the stub and both guards, saturating instead of wrapping") {
    CHECK(least_gap({.size = page_bytes, .guard = page_bytes}) == 3 * page_bytes);
    CHECK(least_gap({.size = page_bytes, .guard = 0}) == page_bytes);
    CHECK(least_gap({.size = page_bytes, .guard = top / 2 + 1}) == top);
    CHECK(least_gap({.size = top - page_bytes + 1, .guard = page_bytes}) == top);
}

TEST_CASE("check_request refuses empty and misaligned requests") {
    CHECK(check_request(1, {.size = page_bytes}).has_value());
    CHECK(failed_with(check_request(0, {.size = page_bytes}), error::empty_range));
    CHECK(failed_with(check_request(1, {.size = 0}), error::empty_range));
    CHECK(failed_with(check_request(1, {.size = page_bytes + 1}), error::misaligned));
    CHECK(failed_with(check_request(1, {.size = page_bytes, .guard = 1}), error::misaligned));
    CHECK(failed_with(check_request(1, {.size = page_bytes, .alignment = 0}), error::misaligned));
    CHECK(failed_with(check_request(1, {.size = page_bytes, .alignment = 3 * page_bytes}), error::misaligned));
    CHECK(failed_with(check_request(1, {.size = page_bytes, .alignment = page_bytes / 2}), error::misaligned));
}

TEST_CASE("fit_lowest and fit_highest place the range with its guards inside the gap, aligned") {
    const region_request r{.size = 2 * page_bytes, .alignment = 0x4000, .guard = page_bytes};
    virt_addr at{};
    // gap 0x1000..0xbfff: the lowest aligned start with a guard before it is
    // 0x4000, the highest with room for the range and a guard is 0x8000.
    REQUIRE(fit_lowest(bounds(0x1000, 0xbfff), r, at));
    CHECK(at.value() == 0x4000);
    REQUIRE(fit_highest(bounds(0x1000, 0xbfff), r, at));
    CHECK(at.value() == 0x8000);
    // gap 0x1000..0x6fff holds 0x4000..0x5fff and its guards exactly.
    REQUIRE(fit_lowest(bounds(0x1000, 0x6fff), r, at));
    CHECK(at.value() == 0x4000);
    REQUIRE(fit_highest(bounds(0x1000, 0x6fff), r, at));
    CHECK(at.value() == 0x4000);
    // one page less at either end and it no longer fits.
    at = virt_addr{0x123000};
    CHECK_FALSE(fit_lowest(bounds(0x1000, 0x5fff), r, at));
    CHECK_FALSE(fit_highest(bounds(0x1000, 0x5fff), r, at));
    CHECK_FALSE(fit_lowest(bounds(0x4000, 0x6fff), r, at));
    CHECK_FALSE(fit_highest(bounds(0x4000, 0x6fff), r, at));
    CHECK(at.value() == 0x123000);  // untouched when false
}

TEST_CASE("fit_lowest and fit_highest at the top of the space do not wrap") {
    const region_request r{.size = page_bytes, .alignment = page_bytes, .guard = page_bytes};
    virt_addr at{};
    // the last three pages: the range in the middle one.
    REQUIRE(fit_lowest(bounds(top - 0x2fff, top), r, at));
    CHECK(at.value() == top - 0x1fff);
    REQUIRE(fit_highest(bounds(top - 0x2fff, top), r, at));
    CHECK(at.value() == top - 0x1fff);
    // aligned to 2 MiB, the next start after the guard lies past 2^64.
    const region_request aligned{.size = page_bytes, .alignment = 2 << 20, .guard = page_bytes};
    CHECK_FALSE(fit_lowest(bounds(top - 0x2fff, top), aligned, at));
    CHECK_FALSE(fit_highest(bounds(top - 0x2fff, top), aligned, at));
}

TEST_CASE("free_run joins adjacent pieces in walk order and starts afresh after a hole") {
    free_run up{walk_order::bottom_up};
    CHECK(up.add(bounds(0x1000, 0x1fff)) == bounds(0x1000, 0x1fff));
    CHECK(up.add(bounds(0x2000, 0x3fff)) == bounds(0x1000, 0x3fff));
    CHECK(up.add(bounds(0x5000, 0x5fff)) == bounds(0x5000, 0x5fff));

    free_run down{walk_order::top_down};
    CHECK(down.add(bounds(0x5000, 0x5fff)) == bounds(0x5000, 0x5fff));
    CHECK(down.add(bounds(0x3000, 0x4fff)) == bounds(0x3000, 0x5fff));
    CHECK(down.add(bounds(0x1000, 0x1fff)) == bounds(0x1000, 0x1fff));
}
