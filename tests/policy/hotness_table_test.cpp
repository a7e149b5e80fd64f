// The heat table both hotness trackers keep (policy/hotness_table.hpp):
// decay, hysteresis, eviction and saturation.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>

#include "asreloc/policy/hotness_table.hpp"

using namespace asreloc;

namespace {
constexpr std::uint64_t base = 0x40'0000;
virt_range page_at(std::uint64_t i) { return virt_range::of(virt_addr{base + i * page_bytes}, page_bytes); }
}  // namespace

TEST_CASE("accesses make a range hot and decay halves them each period") {
    hotness_table<64> t;
    CHECK(t.hotness(page_at(0)) == 0);
    CHECK(t.is_cold(page_at(0)));
    t.record(virt_addr{base + 10}, 10);
    CHECK(t.hotness(page_at(0)) == 10u << 8);
    CHECK(t.hotness(page_at(1)) == 0);
    CHECK_FALSE(t.is_cold(page_at(0)));
    CHECK(t.is_cold(page_at(1)));
    t.age();
    CHECK(t.hotness(page_at(0)) == 5u << 8);
    CHECK(t.hotness(virt_range::of(virt_addr{base}, 4 * page_bytes)) == 5u << 8);
}

TEST_CASE("hysteresis: a hot range stays hot until it decays to the cold threshold") {
    // hot at >= 8 accesses, cold again at <= 2.
    hotness_table<64> t;
    t.record(virt_addr{base}, 7);
    CHECK(t.is_cold(page_at(0)));  // never reached hot
    t.record(virt_addr{base}, 1);
    CHECK_FALSE(t.is_cold(page_at(0)));  // 8: hot
    t.age();                             // 4: between the thresholds, stays hot
    CHECK_FALSE(t.is_cold(page_at(0)));
    t.age();  // 2: cold
    CHECK(t.is_cold(page_at(0)));
    t.record(virt_addr{base}, 3);  // 5: between, stays cold
    CHECK(t.is_cold(page_at(0)));
}

TEST_CASE("decay forgets a slot entirely and frees its entry") {
    hotness_table<4> t;
    t.record(virt_addr{base}, 1000);
    for (int i = 0; i < 40; ++i) t.age();
    CHECK(t.hotness(page_at(0)) == 0);
    CHECK(t.tracked() == 0);
}

TEST_CASE("a full table replaces its coldest slot") {
    hotness_table<2> t;
    t.record(virt_addr{base}, 5);
    t.record(virt_addr{base + page_bytes}, 1);
    t.record(virt_addr{base + 2 * page_bytes}, 3);
    CHECK(t.tracked() == 2);
    CHECK(t.hotness(page_at(0)) == 5u << 8);
    CHECK(t.hotness(page_at(1)) == 0);
    CHECK(t.hotness(page_at(2)) == 3u << 8);
}

TEST_CASE("coldest_of picks the least touched candidate, the lowest address among equals") {
    hotness_table<64> t{hotness_config{.granularity = 2 << 20}};
    t.record(virt_addr{0}, 4);
    t.record(virt_addr{(2 << 20) + 5}, 1);
    const std::array<virt_range, 4> candidates{virt_range::of(virt_addr{0}, page_bytes),
                                               virt_range::of(virt_addr{8 << 20}, page_bytes),
                                               virt_range::of(virt_addr{2 << 20}, page_bytes),
                                               virt_range::of(virt_addr{4 << 20}, page_bytes)};
    auto c = t.coldest_of(candidates);
    REQUIRE(c.has_value());
    CHECK(c->start().value() == std::uint64_t{4} << 20);
    CHECK(failed_with(t.coldest_of({}), error::empty_range));
    // Granularity 2 MiB: a touch anywhere in the granule heats every page of it.
    CHECK(t.hotness(virt_range::of(virt_addr{(2 << 20) + (1 << 20)}, page_bytes)) == 1u << 8);
}

TEST_CASE("counts saturate instead of wrapping") {
    hotness_table<64> t;
    t.record(virt_addr{base}, ~std::uint32_t{0});
    t.record(virt_addr{base}, ~std::uint32_t{0});
    CHECK(t.hotness(page_at(0)) == ~std::uint32_t{0});
}

TEST_CASE("a count too large for the heat saturates, and so does a sum over many slots") {
    hotness_table<4> t;
    t.record(virt_addr{base}, std::uint64_t{1} << 40);  // more than 2^32 accesses in one call
    CHECK(t.hotness(page_at(0)) == ~std::uint32_t{0});
    t.record(virt_addr{base + page_bytes}, std::uint64_t{1} << 23);  // 2^31 heat each
    t.record(virt_addr{base + 2 * page_bytes}, std::uint64_t{1} << 23);
    CHECK(t.hotness(page_at(1)) == std::uint32_t{1} << 31);
    CHECK(t.hotness(virt_range::of(page_at(1).start(), 2 * page_bytes)) == ~std::uint32_t{0});
}

TEST_CASE("among slots of equal heat a full table evicts the lowest address, which then reads as cold") {
    hotness_table<2> t;
    t.record(virt_addr{base + 5 * page_bytes}, 9);
    t.record(virt_addr{base + 3 * page_bytes}, 9);
    CHECK_FALSE(t.is_cold(page_at(3)));
    t.record(virt_addr{base + 7 * page_bytes}, 1);
    CHECK(t.tracked() == 2);
    CHECK(t.hotness(page_at(3)) == 0);
    CHECK(t.is_cold(page_at(3)));  // it was hot: eviction forgets that too
    CHECK(t.hotness(page_at(5)) == 9u << 8);
    CHECK(t.hotness(page_at(7)) == 1u << 8);
}

TEST_CASE("decay_shift sets how much of the heat each period takes, down to nothing") {
    hotness_table<4> t{hotness_config{.decay_shift = 2}};
    t.record(virt_addr{base}, 16);
    t.age();  // heat -= heat / 4
    CHECK(t.hotness(page_at(0)) == 12u << 8);
    t.age();
    CHECK(t.hotness(page_at(0)) == 9u << 8);
    // Below 1 << decay_shift the subtraction would be 0 forever: the slot goes.
    hotness_table<4> faint{hotness_config{.decay_shift = 2}};
    faint.record(virt_addr{base}, 1);
    int periods = 0;
    while (faint.tracked() != 0 && periods < 64) {
        faint.age();
        ++periods;
    }
    CHECK(faint.tracked() == 0);
    CHECK(periods < 64);
}

TEST_CASE("recording zero accesses claims no slot") {
    hotness_table<1> t;
    t.record(virt_addr{base}, 3);
    t.record(virt_addr{base + page_bytes}, 0);
    CHECK(t.tracked() == 1);
    CHECK(t.hotness(page_at(0)) == 3u << 8);
}
