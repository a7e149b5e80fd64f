#include <catch2/catch.hpp>

#include <array>
#include <map>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/policy/coldest_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/reference/page_table.hpp"
#include "support/seed.hpp"

using namespace asreloc;
using ref = reference::page_table;
using selector = coldest_victim<pcg32, trap_count_tracker<>, 8>;

static_assert(victim_selector<selector, ref>);

namespace {
constexpr std::uint64_t base = 0x1000'0000;
}

TEST_CASE("the coldest victim prefers untouched candidates and never picks a pinned one") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    pcg32 gen{seed};
    trap_count_tracker<> tracker;
    // Of four slots, 0 and 1 are hot, 2 is pinned: slot 3 is the only cold candidate.
    for (std::uint64_t i = 0; i < 2; ++i) tracker.record_access(virt_addr{base + i * page_bytes}, 10);
    selector s{gen, tracker};
    ref pt;
    std::array<const ref*, 1> spaces{&pt};
    const std::vector<virt_range> pinned{virt_range::of(virt_addr{base + 2 * page_bytes}, page_bytes)};
    const victim_request r{.window = virt_range::of(virt_addr{base}, 4 * page_bytes), .pinned = pinned};
    int cold = 0;
    for (int i = 0; i < 1000; ++i) {
        auto v = s.select(std::span<const ref* const>{spaces}, r);
        REQUIRE(v.has_value());
        CHECK_FALSE(v->overlaps(pinned[0]));
        cold += v->start().value() == base + 3 * page_bytes;
    }
    // With 8 draws over 3 candidates the cold one is missed with (2/3)^8 ~ 4%.
    CHECK(cold > 850);
}

TEST_CASE("the coldest victim passes on the random selector's errors") {
    pcg32 gen{3};
    trap_count_tracker<> tracker;
    selector s{gen, tracker};
    ref pt;
    std::array<const ref*, 1> spaces{&pt};
    CHECK(failed_with(s.select(std::span<const ref* const>{spaces}, victim_request{.size = 0}), error::empty_range));
    const std::vector<virt_range> all{virt_range::of(virt_addr{base}, 4 * page_bytes)};
    CHECK(failed_with(s.select(std::span<const ref* const>{spaces},
                               victim_request{.window = all[0], .pinned = all}),
                      error::no_victim));
}
