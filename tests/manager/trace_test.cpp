// The trace: a ring keeps the last N events in order; the null sink is free.
#include <catch2/catch.hpp>

#include "world.hpp"

using namespace asreloc;
using namespace asreloc::test;

TEST_CASE("a ring trace keeps the last N events, oldest first, and counts them all", "[trace]") {
    ring_trace<3> ring;
    CHECK(ring.size() == 0);
    for (std::uint64_t i = 0; i < 7; ++i) ring.record({.kind = trace_kind::hopped, .count = i});
    CHECK(ring.total() == 7);
    REQUIRE(ring.size() == 3);
    CHECK(ring[0].count == 4);
    CHECK(ring[1].count == 5);
    CHECK(ring[2].count == 6);
    ring.clear();
    CHECK(ring.size() == 0);
    ring.record({.kind = trace_kind::settled});
    CHECK(ring[0].kind == trace_kind::settled);
}

TEST_CASE("an untraced manager carries no trace state and builds no events", "[trace]") {
    using traced = world<x86_backend>::manager_t;
    using untraced = relocation_manager<x86_backend::space, top_down_finder, random_victim<pcg32>,
                                        failing_store<pool_shadow_store>, trap_count_tracker<64>, recording_tlb,
                                        world_memory>;
    STATIC_REQUIRE(!is_tracing<null_trace>);
    STATIC_REQUIRE(is_tracing<ring_trace<1>>);
    STATIC_REQUIRE(std::is_empty_v<null_trace>);
    // [[no_unique_address]]: the null sink adds nothing to the manager.
    STATIC_REQUIRE(sizeof(untraced) + sizeof(ring_trace<1024>) <= sizeof(traced) + alignof(traced));
}
