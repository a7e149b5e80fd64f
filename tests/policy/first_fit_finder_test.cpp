#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include "asreloc/policy/best_fit_finder.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/reference/page_table.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "policy/support_spaces.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;
using ref = reference::page_table;

static_assert(region_finder<bottom_up_finder, ref>);
static_assert(region_finder<top_down_finder, ref>);
static_assert(region_finder<best_fit_finder, ref>);

namespace {

constexpr std::uint64_t base = 0x4000'0000;
constexpr std::uint64_t mib2 = 2 << 20;

result<virt_range> find(const auto& finder, std::initializer_list<const ref*> spaces, const region_request& r) {
    std::vector<const ref*> v(spaces);
    return finder.find_free(std::span<const ref* const>{v}, r);
}

// The oracle: every page-granular start, checked against translate in every space.
bool free_in_all(std::initializer_list<const ref*> spaces, std::uint64_t first, std::uint64_t last) {
    for (const ref* s : spaces)
        for (std::uint64_t a = first; a <= last; a += page_bytes)
            if (s->translate(virt_addr{a}).has_value()) return false;
    return true;
}

}  // namespace

TEST_CASE("bottom-up and top-down pick the lowest and highest fitting range in the window") {
    ref pt;
    test::map_4k(pt, base, 4);
    test::map_4k(pt, base + 8 * page_bytes, 1);
    const region_request r{.size = 2 * page_bytes, .window = virt_range::of(virt_addr{base}, 16 * page_bytes)};
    auto lo = find(bottom_up_finder{}, {&pt}, r);
    REQUIRE(lo.has_value());
    CHECK(lo->start().value() == base + 4 * page_bytes);
    auto hi = find(top_down_finder{}, {&pt}, r);
    REQUIRE(hi.has_value());
    CHECK(hi->start().value() == base + 14 * page_bytes);
    CHECK(hi->size() == 2 * page_bytes);
}

TEST_CASE("guards keep free pages on both sides, inside the window") {
    ref pt;
    test::map_4k(pt, base, 1);
    test::map_4k(pt, base + 4 * page_bytes, 1);
    const region_request r{.size = page_bytes,
                           .guard = page_bytes,
                           .window = virt_range::of(virt_addr{base}, 16 * page_bytes)};
    auto lo = find(bottom_up_finder{}, {&pt}, r);
    REQUIRE(lo.has_value());
    CHECK(lo->start().value() == base + 2 * page_bytes);
    auto hi = find(top_down_finder{}, {&pt}, r);
    REQUIRE(hi.has_value());
    CHECK(hi->start().value() == base + 14 * page_bytes);  // the window's last page is the upper guard
    // A 3-page hole cannot hold one page plus two guards of two pages.
    const region_request wide{.size = page_bytes,
                              .guard = 2 * page_bytes,
                              .window = virt_range::of(virt_addr{base}, 5 * page_bytes)};
    CHECK(failed_with(find(bottom_up_finder{}, {&pt}, wide), error::no_free_range));
}

TEST_CASE("alignment to 2 MiB and to larger powers of two is honoured") {
    ref pt;
    test::map_4k(pt, base, 1);
    for (std::uint64_t alignment : {mib2, 4 * mib2, std::uint64_t{1} << 30}) {
        const region_request r{.size = page_bytes, .alignment = alignment};
        auto lo = find(bottom_up_finder{}, {&pt}, r);
        REQUIRE(lo.has_value());
        CHECK(lo->start().value() == 0);
        const region_request above{.size = page_bytes,
                                   .alignment = alignment,
                                   .window = virt_range::from_bounds(virt_addr{base}, virt_addr{0x7fff'ffff'ffff})};
        auto a = find(bottom_up_finder{}, {&pt}, above);
        REQUIRE(a.has_value());
        CHECK(a->start().value() == base + alignment);
        auto t = find(top_down_finder{}, {&pt}, above);
        REQUIRE(t.has_value());
        CHECK(t->start().value() % alignment == 0);
        CHECK(t->last().value() <= 0x7fff'ffff'ffff);
    }
}

TEST_CASE("a range is free in every space of the span") {
    ref a, b, c;
    test::map_4k(a, base, 2);
    test::map_4k(b, base + 2 * page_bytes, 2);
    test::map_4k(c, base + 5 * page_bytes, 1);
    const region_request r{.size = 2 * page_bytes, .window = virt_range::of(virt_addr{base}, 32 * page_bytes)};
    auto lo = find(bottom_up_finder{}, {&a, &b, &c}, r);
    REQUIRE(lo.has_value());
    CHECK(lo->start().value() == base + 6 * page_bytes);
    auto best = find(best_fit_finder{}, {&a, &b, &c}, r);
    REQUIRE(best.has_value());
    CHECK(best->start().value() == base + 6 * page_bytes);  // the open tail is larger
}

TEST_CASE("best fit takes the smallest gap that fits, the lowest among equals") {
    ref pt;
    // gaps (pages): [1,3] size 3, [4..5] size 2, [7..8] size 2, [10..] large
    test::map_4k(pt, base, 1);
    test::map_4k(pt, base + 4 * page_bytes, 1);
    test::map_4k(pt, base + 7 * page_bytes, 1);
    test::map_4k(pt, base + 10 * page_bytes, 1);
    const region_request r{.size = 2 * page_bytes, .window = virt_range::of(virt_addr{base}, 64 * page_bytes)};
    auto best = find(best_fit_finder{}, {&pt}, r);
    REQUIRE(best.has_value());
    CHECK(best->start().value() == base + 5 * page_bytes);
}

TEST_CASE("bad requests get the precise error") {
    ref pt;
    CHECK(failed_with(find(bottom_up_finder{}, {}, region_request{}), error::empty_range));
    CHECK(failed_with(find(bottom_up_finder{}, {&pt}, region_request{.size = 0}), error::empty_range));
    CHECK(failed_with(find(top_down_finder{}, {&pt}, region_request{.size = 100}), error::misaligned));
    CHECK(failed_with(find(best_fit_finder{}, {&pt}, region_request{.alignment = 3 * page_bytes}),
                      error::misaligned));
    CHECK(failed_with(find(best_fit_finder{}, {&pt}, region_request{.alignment = 2048}), error::misaligned));
    CHECK(failed_with(find(bottom_up_finder{}, {&pt}, region_request{.guard = 10}), error::misaligned));
    CHECK(failed_with(find(bottom_up_finder{}, {&pt},
                           region_request{.window = virt_range::of(virt_addr{base + 1}, page_bytes)}),
                      error::no_free_range));
}

TEST_CASE("finders agree with a page-by-page oracle on random spaces") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng{seed};
    for (int round = 0; round < 40; ++round) {
        ref a, b;
        for (ref* s : {&a, &b})
            for (int i = 0; i < 6; ++i) {
                const auto page = rng() % 60;
                (void)s->map(virt_range::of(virt_addr{base + page * page_bytes}, page_bytes), phys_addr{0}, read_write,
                             page_size::size_4k);
            }
        const region_request r{.size = (1 + rng() % 4) * page_bytes,
                               .alignment = page_bytes << (rng() % 3),
                               .guard = (rng() % 2) * page_bytes,
                               .window = virt_range::of(virt_addr{base}, 64 * page_bytes)};
        CAPTURE(round, r.size, r.alignment, r.guard);
        // Oracle: all fitting starts.
        std::vector<std::uint64_t> fits;
        for (std::uint64_t s = base; s + r.size <= base + 64 * page_bytes; s += r.alignment) {
            if (s < base + r.guard || s + r.size + r.guard > base + 64 * page_bytes) continue;
            if (free_in_all({&a, &b}, s - r.guard, s + r.size + r.guard - 1)) fits.push_back(s);
        }
        auto lo = find(bottom_up_finder{}, {&a, &b}, r);
        auto hi = find(top_down_finder{}, {&a, &b}, r);
        auto best = find(best_fit_finder{}, {&a, &b}, r);
        if (fits.empty()) {
            CHECK(failed_with(lo, error::no_free_range));
            CHECK(failed_with(hi, error::no_free_range));
            CHECK(failed_with(best, error::no_free_range));
            continue;
        }
        REQUIRE(lo.has_value());
        REQUIRE(hi.has_value());
        REQUIRE(best.has_value());
        CHECK(lo->start().value() == fits.front());
        CHECK(hi->start().value() == fits.back());
        CHECK(std::find(fits.begin(), fits.end(), best->start().value()) != fits.end());
    }
}

TEST_CASE("the finders work on the x86-64 backend") {
    constexpr std::size_t frames = 64;
    using memory = test::sim_memory<frames>;
    using x86_space = x86_64::page_table<frame_pool<frames>, memory>;
    static_assert(region_finder<bottom_up_finder, x86_space>);
    memory mem;
    auto pt = x86_space::create(mem.frames(), mem, x86_64::paging_mode::four_level);
    REQUIRE(pt.has_value());
    auto m = pt->map(virt_range::of(virt_addr{base}, 4 * page_bytes), phys_addr{0x200000}, read_write,
                     page_size::size_4k);
    REQUIRE(m.has_value());
    m->ignore();
    std::array<const x86_space*, 1> spaces{&*pt};
    const region_request r{.size = 2 * page_bytes, .window = virt_range::of(virt_addr{base}, 16 * page_bytes)};
    auto lo = bottom_up_finder{}.find_free(std::span<const x86_space* const>{spaces}, r);
    REQUIRE(lo.has_value());
    CHECK(lo->start().value() == base + 4 * page_bytes);
    auto hi = top_down_finder{}.find_free(std::span<const x86_space* const>{spaces}, r);
    REQUIRE(hi.has_value());
    CHECK(hi->start().value() == base + 14 * page_bytes);
}
