// The trap-counting tracker (policy/trap_count_tracker.hpp) is a hotness_table
// fed by the traps the monitor reports; the table's own behaviour is tested in
// hotness_table_test.cpp.
#include <catch2/catch.hpp>

#include <array>

#include "asreloc/policy/trap_count_tracker.hpp"

using namespace asreloc;

static_assert(hotness_tracker<trap_count_tracker<>>);

TEST_CASE("the trap-count tracker turns reported traps into heat, per granule, with the table's decay") {
    trap_count_tracker<8> t{hotness_config{.granularity = 2 << 20}};
    CHECK(t.config().granularity == 2 << 20);
    t.record_access(virt_addr{(2 << 20) + 0x1234}, 8);  // hot at 8
    const virt_range granule = virt_range::of(virt_addr{2 << 20}, 2 << 20);
    const virt_range other = virt_range::of(virt_addr{0}, page_bytes);
    CHECK(t.hotness(virt_range::of(virt_addr{(4 << 20) - page_bytes}, page_bytes)) == 8u << 8);
    CHECK_FALSE(t.is_cold(granule));
    CHECK(t.is_cold(other));
    CHECK(t.tracked() == 1);
    const std::array<virt_range, 2> candidates{granule, other};
    auto c = t.coldest_of(candidates);
    REQUIRE(c.has_value());
    CHECK(*c == other);
    t.age();
    CHECK(t.hotness(granule) == 4u << 8);
}
