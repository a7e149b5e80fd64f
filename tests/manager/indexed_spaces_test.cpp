// The manager over indexed spaces (indexed_page_table) behaves exactly as over
// the plain tables: the same random guest activity gives the same placements,
// relocations and guest-visible memory, and every index stays equal to its
// table's own gap walk.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "indexed_backend.hpp"
#include "support/gap_walks.hpp"
#include "support/seed.hpp"
#include "world.hpp"

using namespace asreloc;
using namespace asreloc::test;

static_assert(page_table<indexed_x86_backend::space>);
static_assert(sized_gap_walk<indexed_x86_backend::space>);

TEST_CASE("the manager over indexed spaces moves the stub exactly as over plain tables") {
    const auto seed = test_seed();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    std::mt19937_64 rng{seed};
    // A 96-page window: free ranges run out, so victims are taken too.
    const world_options o{.config = {.window = virt_range::of(virt_addr{window_base}, 96 * page_bytes)},
                          .rng_seed = seed};
    world<x86_backend> plain(o);
    world<indexed_x86_backend> indexed(o);
    const space_id g_plain = plain.add_guest(), g_indexed = indexed.add_guest();
    REQUIRE(g_plain == g_indexed);
    REQUIRE(plain.place().has_value());
    REQUIRE(indexed.place().has_value());

    std::vector<std::uint64_t> mapped;  // guest pages, by address
    for (int step = 0; step < 600; ++step) {
        CAPTURE(step);
        const std::uint64_t va = window_base + (rng() % 112) * page_bytes;  // the window and a little beyond
        const bool is_mapped = std::find(mapped.begin(), mapped.end(), va) != mapped.end();
        if (!is_mapped) {
            plain.guest_map(g_plain, va, 1, static_cast<std::uint8_t>(step));
            indexed.guest_map(g_indexed, va, 1, static_cast<std::uint8_t>(step));
            mapped.push_back(va);
        } else if (rng() % 2 == 0) {
            const auto page = virt_range::of(virt_addr{va}, page_bytes);
            auto a = plain.manager().guest_unmap(g_plain, page);
            auto b = indexed.manager().guest_unmap(g_indexed, page);
            REQUIRE(a.has_value() == b.has_value());
            mapped.erase(std::find(mapped.begin(), mapped.end(), va));
        } else {
            REQUIRE(plain.manager().tick().has_value() == indexed.manager().tick().has_value());
        }
        REQUIRE(plain.manager().placement().has_value() == indexed.manager().placement().has_value());
        if (plain.manager().placement()) CHECK(*plain.manager().placement() == *indexed.manager().placement());
        const auto ps = plain.manager().stats(), is = indexed.manager().stats();
        CHECK(ps.conflicts_into_free == is.conflicts_into_free);
        CHECK(ps.conflicts_over_victim == is.conflicts_over_victim);
        CHECK(ps.pages_displaced == is.pages_displaced);
        CHECK(gaps_of(indexed.guest(g_indexed)) == gaps_of(indexed.guest(g_indexed).table()));
        CHECK(gaps_of(indexed.monitor()) == gaps_of(indexed.monitor().table()));
    }
    // Both kinds of move happened (else the comparison proved little).
    CHECK(indexed.manager().stats().conflicts_into_free > 0);
    CHECK(indexed.manager().stats().conflicts_over_victim > 0);
    CHECK(plain.manager().stats() == indexed.manager().stats());
    // Every guest page reads the same through both managers.
    for (const std::uint64_t va : mapped) CHECK(plain.guest_byte(g_plain, va) == indexed.guest_byte(g_indexed, va));
}
