#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "asreloc/paging/indexed_page_table.hpp"
#include "asreloc/policy/best_fit_finder.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/reference/page_table.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "support/gap_walks.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;
using asreloc::test::gaps_of;

namespace {

constexpr std::size_t frames = 1024;
using memory = test::sim_memory<frames>;
using x86_space = x86_64::page_table<frame_pool<frames>, memory>;
using indexed = indexed_page_table<x86_space>;

static_assert(page_table<indexed>);
static_assert(sized_gap_walk<indexed>);
static_assert(accessed_dirty_page_table<indexed>);
static_assert(!sized_gap_walk<x86_space>);
static_assert(page_table<indexed_page_table<reference::page_table>>);
static_assert(region_finder<bottom_up_finder, indexed>);
static_assert(region_finder<best_fit_finder, indexed>);
// The x86-64 backend's scattered-frame map passes through (the manager uses
// it for the stub); a backend without one gets none.
constexpr auto any_frame = [](std::uint64_t) { return phys_addr{}; };
template <class S>
concept maps_scattered_frames = requires(S& s, virt_range r) { s.map_4k_pages(r, read_write, any_frame); };
static_assert(maps_scattered_frames<indexed>);
static_assert(!maps_scattered_frames<indexed_page_table<reference::page_table>>);
// So does its stub move.
struct page_leaf {
    phys_addr frame;
    attributes attrs;
};
constexpr auto leaf_of = [](std::uint64_t k) { return page_leaf{phys_addr{0x20'0000 + 0x1000 * k}, read_write}; };
template <class S>
concept moves_pages = requires(S& s, virt_range r) { s.move_4k_pages(r, r, leaf_of); };
static_assert(moves_pages<indexed>);
static_assert(!moves_pages<indexed_page_table<reference::page_table>>);

constexpr std::uint64_t base = 0x7f00'0000'0000;

// One x86-64 space over its own simulated memory (neither can move).
struct world {
    memory mem;
    result<x86_space> made;
    x86_space& table;
    explicit world(x86_64::paging_mode mode = x86_64::paging_mode::four_level)
        : made(x86_space::create(mem.frames(), mem, mode)), table(*made) {}
};

// Every free range of a space (an index or a table), lowest first.
std::vector<virt_range> all_gaps(const auto& space) {
    return gaps_of(space, virt_range::everything(), walk_order::bottom_up);
}

void map_pages(auto& space, std::uint64_t start, std::uint64_t count, page_size size = page_size::size_4k) {
    auto r = space.map(virt_range::of(virt_addr{start}, count * bytes(size)), phys_addr{0}, read_write, size);
    REQUIRE(r.has_value());
    r->ignore();
}

}  // namespace

TEST_CASE("over() indexes the free space the table's own walk reports") {
    world w;
    map_pages(w.table, base, 3);
    map_pages(w.table, base + 0x10000, 1);
    map_pages(w.table, base + 0x400000, 2, page_size::size_2m);
    std::vector<gap_index::node> storage(16);
    auto ix = indexed::over(w.table, storage);
    REQUIRE(ix.has_value());
    for (const auto order : {walk_order::bottom_up, walk_order::top_down}) {
        CHECK(gaps_of(*ix, virt_range::everything(), order) == gaps_of(w.table, virt_range::everything(), order));
        const auto window = virt_range::of(virt_addr{base + 0x2000}, 0x800000);
        CHECK(gaps_of(*ix, window, order) == gaps_of(w.table, window, order));
    }
    CHECK(ix->index().size() == 5);  // between the three mappings, and the two halves' outer parts
}

TEST_CASE("over() refuses storage too small for the table's free ranges") {
    world w;
    map_pages(w.table, base, 1);
    map_pages(w.table, base + 0x2000, 1);
    std::vector<gap_index::node> storage(4);  // 4 gaps need 5 nodes
    auto ix = indexed::over(w.table, storage);
    CHECK(failed_with(ix, error::capacity_exceeded));
}

TEST_CASE("a change the index has no room for fails with capacity_exceeded and changes nothing") {
    world w;
    std::vector<gap_index::node> storage(3);  // the two canonical halves, plus one
    auto ix = indexed::over(w.table, storage);
    REQUIRE(ix.has_value());
    map_pages(*ix, base, 1);  // the lower half becomes two ranges: no node left
    REQUIRE_FALSE(ix->index().has_room());
    const auto before = all_gaps(w.table);

    auto m = ix->map(virt_range::of(virt_addr{base + 0x4000}, page_bytes), phys_addr{0}, read_write,
                     page_size::size_4k);
    CHECK(failed_with(m, error::capacity_exceeded));
    auto u = ix->unmap(virt_range::of(virt_addr{base}, page_bytes));
    CHECK(failed_with(u, error::capacity_exceeded));
    CHECK(all_gaps(w.table) == before);
    CHECK(all_gaps(*ix) == before);
}

TEST_CASE("a map of scattered frames through the index takes its range out of the free space") {
    world w;
    std::vector<gap_index::node> storage(3);
    auto ix = indexed::over(w.table, storage);
    REQUIRE(ix.has_value());
    const auto range = virt_range::of(virt_addr{base + 0x3000}, 3 * page_bytes);
    auto m = ix->map_4k_pages(range, read_write, [](std::uint64_t k) { return phys_addr{0x10'0000 + 0x2000 * k}; });
    REQUIRE(m.has_value());
    m->ignore();
    CHECK(ix->translate(range.start() + 2 * page_bytes)->phys == phys_addr{0x10'4000});
    CHECK(all_gaps(*ix) == all_gaps(w.table));
    // The lower half is now two ranges: no node left for another change.
    auto refused = ix->map_4k_pages(virt_range::of(virt_addr{base}, page_bytes), read_write, any_frame);
    CHECK(failed_with(refused, error::capacity_exceeded));
    CHECK_FALSE(w.table.translate(virt_addr{base}).has_value());
}

TEST_CASE("a move through the index frees its source and takes its target, given a node to spare for each") {
    world w;
    std::vector<gap_index::node> storage(4);  // the two halves, the split around `from`, one spare
    auto ix = indexed::over(w.table, storage);
    REQUIRE(ix.has_value());
    const auto from = virt_range::of(virt_addr{base}, 2 * page_bytes);
    const auto to = virt_range::of(virt_addr{base + 0x10'0000}, 2 * page_bytes);
    map_pages(*ix, base, 2);
    REQUIRE(ix->index().has_room(1));
    REQUIRE_FALSE(ix->index().has_room(2));
    const auto before = all_gaps(w.table);
    CHECK(failed_with(ix->move_4k_pages(from, to, leaf_of), error::capacity_exceeded));
    CHECK(all_gaps(w.table) == before);
    CHECK(all_gaps(*ix) == before);

    std::vector<gap_index::node> more(5);
    auto roomy = indexed::over(w.table, more);
    REQUIRE(roomy.has_value());
    auto moved = roomy->move_4k_pages(from, to, leaf_of);
    REQUIRE(moved.has_value());
    CHECK(moved->range() == from);
    CHECK(roomy->translate(to.start() + page_bytes)->phys == phys_addr{0x20'1000});
    CHECK(all_gaps(*roomy) == all_gaps(w.table));
    // A move the table refuses (the target now mapped) leaves the index alone.
    CHECK(failed_with(roomy->move_4k_pages(to, to, leaf_of), error::overlaps));
    CHECK(all_gaps(*roomy) == all_gaps(w.table));
}

TEST_CASE("a change the table refuses leaves the index as it was") {
    world w;
    std::vector<gap_index::node> storage(8);
    auto ix = indexed::over(w.table, storage);
    REQUIRE(ix.has_value());
    map_pages(*ix, base, 2);
    auto overlapping = ix->map(virt_range::of(virt_addr{base + page_bytes}, 2 * page_bytes), phys_addr{0},
                               read_write, page_size::size_4k);
    CHECK(failed_with(overlapping, error::overlaps));
    auto not_mapped = ix->unmap(virt_range::of(virt_addr{base + page_bytes}, 2 * page_bytes));
    CHECK(failed_with(not_mapped, error::not_mapped));
    auto misaligned = ix->for_each_gap(virt_range::of(virt_addr{base + 1}, page_bytes), walk_order::bottom_up,
                                       [](const virt_range&) { return walk_control::proceed; });
    CHECK(failed_with(misaligned, error::misaligned));
    CHECK(all_gaps(*ix) == all_gaps(w.table));
}

TEST_CASE("the index follows random maps and unmaps made through it (4- and 5-level)") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng{seed};
    for (const auto mode : {x86_64::paging_mode::four_level, x86_64::paging_mode::five_level}) {
        world w(mode);
        std::vector<gap_index::node> storage(512);
        auto ix = indexed::over(w.table, storage);
        REQUIRE(ix.has_value());
        // Mappings in 2 MiB slots near the top of the lower half and at the
        // bottom of the upper half (4 KiB runs, or one 2 MiB page).
        const std::uint64_t upper = mode == x86_64::paging_mode::five_level ? 0xff00'0000'0000'0000 : 0xffff'8000'0000'0000;
        std::vector<virt_range> mapped;
        for (int step = 0; step < 600; ++step) {
            CAPTURE(step);
            if (!mapped.empty() && rng() % 4 == 0) {
                // A run of 4 KiB pages moves to a random place near it.
                const std::size_t k = rng() % mapped.size();
                const auto& from = mapped[k];
                const auto to = virt_range::of(virt_addr{(from.start().value() & ~((std::uint64_t{2} << 20) - 1)) +
                                                         (rng() % 1024) * page_bytes},
                                               from.size());
                auto m = ix->move_4k_pages(from, to, leaf_of);
                if (m) {
                    m->ignore();
                    mapped[k] = to;
                } else {
                    REQUIRE((failed_with(m, error::overlaps) || failed_with(m, error::not_mapped)));
                }
            } else if (!mapped.empty() && rng() % 3 == 0) {
                const std::size_t k = rng() % mapped.size();
                auto u = ix->unmap(mapped[k]);
                REQUIRE(u.has_value());
                u->ignore();
                mapped.erase(mapped.begin() + static_cast<std::ptrdiff_t>(k));
            } else {
                const std::uint64_t slot = (rng() % 2 ? upper : base) + (rng() % 64) * (std::uint64_t{2} << 20);
                const bool large = rng() % 4 == 0;
                const auto r = large ? virt_range::of(virt_addr{slot}, std::uint64_t{2} << 20)
                                     : virt_range::of(virt_addr{slot + (rng() % 500) * page_bytes},
                                                      (1 + rng() % 12) * page_bytes);
                auto m = ix->map(r, phys_addr{0}, read_write, large ? page_size::size_2m : page_size::size_4k);
                if (m) {
                    m->ignore();
                    mapped.push_back(r);
                } else {
                    REQUIRE(failed_with(m, error::overlaps));
                }
            }
            const std::uint64_t a = (rng() % 2 ? upper : base) + (rng() % 4096) * page_bytes;
            const auto window = virt_range::of(virt_addr{a}, (1 + rng() % 40000) * page_bytes);
            for (const auto order : {walk_order::bottom_up, walk_order::top_down})
                REQUIRE(gaps_of(*ix, window, order) == gaps_of(w.table, window, order));
        }
        CHECK(all_gaps(*ix) == all_gaps(w.table));
    }
}

TEST_CASE("finders give the same answer over the index as over the table walk") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng{seed};
    constexpr std::size_t spaces_max = 3;
    for (int round = 0; round < 60; ++round) {
        std::array<std::unique_ptr<world>, spaces_max> worlds;
        std::array<std::vector<gap_index::node>, spaces_max> storage;
        std::vector<indexed> indexes;
        std::vector<const x86_space*> plain;
        std::vector<const indexed*> fast;
        const std::size_t n = 1 + rng() % spaces_max;
        for (std::size_t s = 0; s < n; ++s) {
            worlds[s] = std::make_unique<world>();
            for (int i = 0; i < 30; ++i) {
                const auto r = virt_range::of(virt_addr{base + (rng() % 2048) * page_bytes}, (1 + rng() % 6) * page_bytes);
                auto m = worlds[s]->table.map(r, phys_addr{0}, read_write, page_size::size_4k);
                if (m) m->ignore();
            }
            storage[s].resize(64);
            auto ix = indexed::over(worlds[s]->table, storage[s]);
            REQUIRE(ix.has_value());
            indexes.push_back(std::move(*ix));
            plain.push_back(&worlds[s]->table);
        }
        for (const auto& ix : indexes) fast.push_back(&ix);
        for (int q = 0; q < 20; ++q) {
            const std::uint64_t w0 = base - 64 * page_bytes + (rng() % 2200) * page_bytes;
            const region_request r{.size = (1 + rng() % 8) * page_bytes,
                                   .alignment = page_bytes << (rng() % 4),
                                   .guard = (rng() % 3) * page_bytes,
                                   .window = virt_range::of(virt_addr{w0}, (1 + rng() % 400) * page_bytes)};
            CAPTURE(round, n, r.size, r.alignment, r.guard, r.window.start().value(), r.window.last().value());
            auto same = [&](const auto& finder) {
                auto want = finder.find_free(std::span<const x86_space* const>{plain}, r);
                auto got = finder.find_free(std::span<const indexed* const>{fast}, r);
                REQUIRE(want.has_value() == got.has_value());
                if (want) CHECK(*want == *got);
                else CHECK(want.error_code() == got.error_code());
            };
            same(bottom_up_finder{});
            same(top_down_finder{});
            same(best_fit_finder{});
        }
    }
}
