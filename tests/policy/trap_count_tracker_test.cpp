#include <catch2/catch.hpp>

#include <array>

#include "asreloc/policy/trap_count_tracker.hpp"

using namespace asreloc;

namespace {
constexpr std::uint64_t base = 0x40'0000;
virt_range page_at(std::uint64_t i) { return virt_range::of(virt_addr{base + i * page_bytes}, page_bytes); }
}  // namespace

TEST_CASE("trap counts make a range hot and decay halves them each period") {
    trap_count_tracker<> t;
    CHECK(t.hotness(page_at(0)) == 0);
    CHECK(t.is_cold(page_at(0)));
    t.record_access(virt_addr{base + 10}, 10);
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
    trap_count_tracker<> t;
    t.record_access(virt_addr{base}, 7);
    CHECK(t.is_cold(page_at(0)));  // never reached hot
    t.record_access(virt_addr{base}, 1);
    CHECK_FALSE(t.is_cold(page_at(0)));  // 8: hot
    t.age();                             // 4: between the thresholds, stays hot
    CHECK_FALSE(t.is_cold(page_at(0)));
    t.age();  // 2: cold
    CHECK(t.is_cold(page_at(0)));
    t.record_access(virt_addr{base}, 3);  // 5: between, stays cold
    CHECK(t.is_cold(page_at(0)));
}

TEST_CASE("decay forgets a slot entirely and frees its entry") {
    trap_count_tracker<4> t;
    t.record_access(virt_addr{base}, 1000);
    for (int i = 0; i < 40; ++i) t.age();
    CHECK(t.hotness(page_at(0)) == 0);
    CHECK(t.tracked() == 0);
}

TEST_CASE("a full table replaces its coldest slot") {
    trap_count_tracker<2> t;
    t.record_access(virt_addr{base}, 5);
    t.record_access(virt_addr{base + page_bytes}, 1);
    t.record_access(virt_addr{base + 2 * page_bytes}, 3);
    CHECK(t.tracked() == 2);
    CHECK(t.hotness(page_at(0)) == 5u << 8);
    CHECK(t.hotness(page_at(1)) == 0);
    CHECK(t.hotness(page_at(2)) == 3u << 8);
}

TEST_CASE("coldest_of picks the least touched candidate, the lowest address among equals") {
    trap_count_tracker<> t{hotness_config{.granularity = 2 << 20}};
    t.record_access(virt_addr{0}, 4);
    t.record_access(virt_addr{(2 << 20) + 5}, 1);
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
    trap_count_tracker<> t;
    t.record_access(virt_addr{base}, ~std::uint32_t{0});
    t.record_access(virt_addr{base}, ~std::uint32_t{0});
    CHECK(t.hotness(page_at(0)) == ~std::uint32_t{0});
}
