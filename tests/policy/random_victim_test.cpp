#include <catch2/catch.hpp>

#include <array>
#include <map>
#include <random>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/reference/page_table.hpp"
#include "support/seed.hpp"

using namespace asreloc;
using ref = reference::page_table;

static_assert(victim_selector<random_victim<pcg32>, ref>);
static_assert(victim_selector<random_victim<std::mt19937_64>, ref>);

namespace {

constexpr std::uint64_t base = 0x1000'0000;

virt_range slot(std::uint64_t i, std::uint64_t n = 1) { return virt_range::of(virt_addr{base + i * page_bytes}, n * page_bytes); }

template <class Gen, std::size_t N>
result<virt_range> pick(random_victim<Gen, N>& v, const ref& pt, const victim_request& r) {
    std::array<const ref*, 1> spaces{&pt};
    return v.select(std::span<const ref* const>{spaces}, r);
}

}  // namespace

// Chi-square goodness of fit against the uniform distribution on the 59
// eligible slots of a 64-slot window (5 pinned), so 58 degrees of freedom.
// Significance 0.001: the critical value 97.039 is the 0.999 quantile of
// chi-square(58), computed from the regularized incomplete gamma function
// (bisection on Q(29, x/2) = 0.001; the same method gives the tabulated
// 85.351 for 49 degrees). 0.001 because the seed is fixed: a correct selector
// fails this check for one seed in a thousand, so the chosen seed passing is
// evidence, and a biased selector (e.g. modulo bias, an off-by-one in the
// skip over pinned slots that doubles a neighbour) overshoots it by far:
// doubling one slot's weight alone adds about 1000 to the statistic here.
TEST_CASE("the random victim is uniform over the eligible candidates (chi-square, alpha 0.001)") {
    ref pt;
    pcg32 gen{20261125};
    random_victim<pcg32> selector{gen};
    const std::vector<virt_range> pinned{
        slot(3),                                                  // one slot
        slot(10, 2), slot(11, 2),                                 // overlapping pins: 10..12
        virt_range::of(virt_addr{base + 40 * page_bytes + 100}, 8),  // a few bytes block the whole slot
    };
    const victim_request r{.window = slot(0, 64), .pinned = pinned};
    constexpr int eligible = 59;
    constexpr int draws = eligible * 1000;
    std::map<std::uint64_t, int> counts;
    for (int i = 0; i < draws; ++i) {
        auto v = pick(selector, pt, r);
        REQUIRE(v.has_value());
        counts[(v->start().value() - base) / page_bytes]++;
    }
    REQUIRE(counts.size() == eligible);
    for (std::uint64_t blocked : {3, 10, 11, 12, 40}) CHECK(counts.count(blocked) == 0);
    const double expected = draws / double(eligible);
    double chi2 = 0;
    for (const auto& [s, c] : counts) chi2 += (c - expected) * (c - expected) / expected;
    INFO("chi-square " << chi2 << " with 58 degrees of freedom");
    CHECK(chi2 < 97.039);
    WARN("random_victim chi-square statistic: " << chi2 << " (df 58, critical 97.039 at alpha 0.001)");
}

TEST_CASE("the random victim never picks a candidate overlapping a pinned range") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng{seed};
    random_victim<std::mt19937_64> selector{rng};
    ref pt;
    for (int round = 0; round < 50; ++round) {
        std::vector<virt_range> pinned;
        const auto pins = rng() % 8;
        for (std::uint64_t i = 0; i < pins; ++i)
            pinned.push_back(virt_range::of(virt_addr{base + rng() % (256 * page_bytes)}, 1 + rng() % (8 * page_bytes)));
        const victim_request r{.size = (1 + rng() % 3) * page_bytes,
                               .alignment = page_bytes << (rng() % 3),
                               .window = virt_range::of(virt_addr{base + (rng() % 4) * page_bytes}, 256 * page_bytes),
                               .pinned = pinned};
        CAPTURE(round, r.size, r.alignment);
        // Oracle: are there candidates at all?
        bool any = false;
        for (std::uint64_t s = (r.window.start().value() + r.alignment - 1) & ~(r.alignment - 1);
             s + r.size - 1 <= r.window.last().value(); s += r.alignment) {
            bool ok = true;
            for (const auto& p : pinned) ok = ok && !virt_range::of(virt_addr{s}, r.size).overlaps(p);
            any = any || ok;
        }
        for (int i = 0; i < 200; ++i) {
            auto v = pick(selector, pt, r);
            if (!any) {
                CHECK(failed_with(v, error::no_victim));
                break;
            }
            REQUIRE(v.has_value());
            CHECK(v->size() == r.size);
            CHECK(v->start().value() % r.alignment == 0);
            CHECK(r.window.contains(*v));
            for (const auto& p : pinned) CHECK_FALSE(v->overlaps(p));
        }
    }
}

TEST_CASE("the random victim stays canonical in every space") {
    pcg32 gen{7};
    random_victim<pcg32> selector{gen};
    ref four{48}, five{57};
    std::array<const ref*, 2> spaces{&four, &five};
    // A window straddling the 48-bit lower half's end: only 4 candidates lie below it.
    const victim_request r{.window = virt_range::of(virt_addr{0x7fff'ffff'c000}, 16 * page_bytes)};
    for (int i = 0; i < 500; ++i) {
        auto v = selector.select(std::span<const ref* const>{spaces}, r);
        REQUIRE(v.has_value());
        CHECK(v->last().value() <= 0x7fff'ffff'ffff);
    }
    const victim_request hole{.window = virt_range::of(virt_addr{0x8000'0000'0000}, 16 * page_bytes)};
    CHECK(failed_with(selector.select(std::span<const ref* const>{spaces}, hole), error::no_victim));
}

TEST_CASE("random victim: bad requests and too many pins get the precise error") {
    pcg32 gen{1};
    random_victim<pcg32, 4> selector{gen};
    ref pt;
    CHECK(failed_with(pick(selector, pt, victim_request{.size = 0}), error::empty_range));
    CHECK(failed_with(selector.select(std::span<const ref* const>{}, victim_request{}), error::empty_range));
    CHECK(failed_with(pick(selector, pt, victim_request{.size = 5000}), error::misaligned));
    CHECK(failed_with(pick(selector, pt, victim_request{.alignment = 3 * page_bytes}), error::misaligned));
    CHECK(failed_with(pick(selector, pt, victim_request{.window = virt_range::of(virt_addr{base + 1}, page_bytes)}),
                      error::no_victim));
    // Four pins fit the capacity of 4 when the window keeps the non-canonical hole out...
    const std::vector<virt_range> pins{slot(1), slot(3), slot(5), slot(7)};
    auto fits = pick(selector, pt, victim_request{.window = slot(0, 16), .pinned = pins});
    REQUIRE(fits.has_value());
    for (const auto& p : pins) CHECK_FALSE(fits->overlaps(p));
    // ...and the hole makes five blocked ranges over the whole space.
    CHECK(failed_with(pick(selector, pt, victim_request{.pinned = pins}), error::capacity_exceeded));
    const std::vector<virt_range> all{slot(0, 16)};
    CHECK(failed_with(pick(selector, pt, victim_request{.window = slot(0, 16), .pinned = all}), error::no_victim));
}
