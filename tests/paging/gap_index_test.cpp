#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "asreloc/paging/gap_index.hpp"
#include "support/seed.hpp"

using namespace asreloc;

namespace {

constexpr std::uint64_t top = ~std::uint64_t{0};

virt_range pages(std::uint64_t first, std::uint64_t count) {
    return virt_range::of(virt_addr{first}, count * page_bytes);
}

std::vector<virt_range> collect_at_least(const gap_index& index, const virt_range& window, walk_order order,
                                         std::uint64_t min_bytes) {
    std::vector<virt_range> out;
    (void)index.for_each_gap_at_least(window, order, min_bytes, [&](const virt_range& r) {
        out.push_back(r);
        return walk_control::proceed;
    });
    return out;
}

std::vector<virt_range> collect_by_size(const gap_index& index, const virt_range& window, std::uint64_t min_bytes) {
    std::vector<virt_range> out;
    (void)index.for_each_gap_by_size(window, min_bytes, [&](const virt_range& r) {
        out.push_back(r);
        return walk_control::proceed;
    });
    return out;
}

// The model: one flag per page of two small domains, one at the bottom of the
// 64-bit space and one at its top (so both ends' arithmetic is exercised);
// the pages between them are never free.
struct model {
    static constexpr std::uint64_t per_end = 96;
    std::vector<bool> free = std::vector<bool>(2 * per_end, false);

    static std::uint64_t address(std::uint64_t i) {
        return i < per_end ? i * page_bytes : top - (2 * per_end - i) * page_bytes + 1;
    }
    static bool adjacent(std::uint64_t i) { return i != per_end; }  // page i follows page i - 1

    // The maximal free ranges clipped to `window`, ascending.
    std::vector<virt_range> gaps(const virt_range& window) const {
        std::vector<virt_range> out;
        for (std::uint64_t i = 0; i < free.size(); ++i) {
            if (!free[i]) continue;
            std::uint64_t j = i;
            while (j + 1 < free.size() && free[j + 1] && adjacent(j + 1)) ++j;
            const std::uint64_t lo = std::max(address(i), window.start().value());
            const std::uint64_t hi = std::min(address(j) + page_bytes - 1, window.last().value());
            if (lo <= hi) out.push_back(virt_range::from_bounds(virt_addr{lo}, virt_addr{hi}));
            i = j;
        }
        return out;
    }
    std::size_t runs() const { return gaps(virt_range::everything()).size(); }
};

std::uint64_t size_of(const virt_range& r) { return r.last() - r.start() + 1; }

}  // namespace

TEST_CASE("added ranges join the free ranges they touch, removed ones cut them") {
    std::vector<gap_index::node> storage(8);
    gap_index index(storage);
    index.add_free(pages(0x10000, 2));
    index.add_free(pages(0x14000, 2));
    CHECK(index.size() == 2);
    index.add_free(pages(0x12000, 2));  // touches both: one range
    REQUIRE(index.size() == 1);
    CHECK(collect_at_least(index, virt_range::everything(), walk_order::bottom_up, 0) ==
          std::vector{pages(0x10000, 6)});
    index.remove_free(pages(0x12000, 1));  // a hole in the middle: two ranges
    CHECK(collect_at_least(index, virt_range::everything(), walk_order::bottom_up, 0) ==
          std::vector{pages(0x10000, 2), pages(0x13000, 3)});
    index.remove_free(pages(0x10000, 6));  // overlapping both, and the used page between
    CHECK(index.size() == 0);
    CHECK(index.has_room());
}

TEST_CASE("the ends of the 64-bit space are handled without wrapping") {
    std::vector<gap_index::node> storage(4);
    gap_index index(storage);
    index.add_free(virt_range::everything());
    CHECK(collect_by_size(index, virt_range::everything(), 0) == std::vector{virt_range::everything()});
    index.remove_free(pages(0, 1));
    index.remove_free(pages(top - page_bytes + 1, 1));
    CHECK(collect_at_least(index, virt_range::everything(), walk_order::top_down, 0) ==
          std::vector{virt_range::from_bounds(virt_addr{page_bytes}, virt_addr{top - page_bytes})});
    index.add_free(pages(top - page_bytes + 1, 1));
    index.add_free(pages(0, 1));
    CHECK(collect_at_least(index, virt_range::everything(), walk_order::bottom_up, 0) ==
          std::vector{virt_range::everything()});
}

TEST_CASE("walks skip the ranges narrower than asked and clip to the window") {
    std::vector<gap_index::node> storage(8);
    gap_index index(storage);
    index.add_free(pages(0x10000, 1));
    index.add_free(pages(0x20000, 4));
    index.add_free(pages(0x30000, 2));
    const auto all = virt_range::everything();
    CHECK(collect_at_least(index, all, walk_order::bottom_up, 2 * page_bytes) ==
          std::vector{pages(0x20000, 4), pages(0x30000, 2)});
    CHECK(collect_at_least(index, all, walk_order::top_down, 2 * page_bytes) ==
          std::vector{pages(0x30000, 2), pages(0x20000, 4)});
    CHECK(collect_by_size(index, all, 0) == std::vector{pages(0x10000, 1), pages(0x30000, 2), pages(0x20000, 4)});
    // The window cuts the widest range to one page: it now sorts first, and a
    // two-page minimum drops it.
    const auto window = virt_range::from_bounds(virt_addr{0x23000}, virt_addr{0x31fff});
    CHECK(collect_by_size(index, window, 0) == std::vector{pages(0x23000, 1), pages(0x30000, 2)});
    CHECK(collect_at_least(index, window, walk_order::bottom_up, 2 * page_bytes) == std::vector{pages(0x30000, 2)});
}

TEST_CASE("a visitor's stop ends the walk") {
    std::vector<gap_index::node> storage(8);
    gap_index index(storage);
    for (std::uint64_t i = 0; i < 5; ++i) index.add_free(pages(0x10000 + i * 0x2000, 1));
    int seen = 0;
    auto stop_at_second = [&](const virt_range&) { return ++seen == 2 ? walk_control::stop : walk_control::proceed; };
    CHECK(index.for_each_gap_at_least(virt_range::everything(), walk_order::bottom_up, 0, stop_at_second) ==
          walk_control::stop);
    CHECK(seen == 2);
    seen = 0;
    CHECK(index.for_each_gap_by_size(virt_range::everything(), 0, stop_at_second) == walk_control::stop);
    CHECK(seen == 2);
}

TEST_CASE("every change fits in the nodes it frees plus one") {
    std::vector<gap_index::node> storage(2);
    gap_index index(storage);
    index.add_free(pages(0x10000, 8));
    index.remove_free(pages(0x12000, 1));  // one range becomes two: the last spare node
    CHECK(index.size() == 2);
    CHECK_FALSE(index.has_room());
    index.add_free(pages(0x12000, 1));  // joins them: a node comes back
    CHECK(index.size() == 1);
    CHECK(index.has_room());
}

TEST_CASE("the index agrees with a page-by-page model under random changes") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng{seed};
    model m;
    std::vector<gap_index::node> storage(model::per_end + 4);
    gap_index index(storage, seed);
    for (int step = 0; step < 4000; ++step) {
        // A run of pages inside one domain, freed or used.
        const std::uint64_t end = rng() % 2, len = 1 + rng() % 12;
        const std::uint64_t first = end * model::per_end + rng() % (model::per_end - len + 1);
        const virt_range r = virt_range::of(virt_addr{model::address(first)}, len * page_bytes);
        const bool make_free = rng() % 2 == 0;
        CAPTURE(step, r.start().value(), len, make_free);
        REQUIRE(index.has_room());
        if (make_free) index.add_free(r);
        else index.remove_free(r);
        for (std::uint64_t i = first; i < first + len; ++i) m.free[i] = make_free;
        REQUIRE(index.size() == m.runs());

        const std::uint64_t w0 = rng() % (2 * model::per_end), w1 = rng() % (2 * model::per_end);
        const auto window = virt_range::from_bounds(virt_addr{model::address(std::min(w0, w1))},
                                                    virt_addr{model::address(std::max(w0, w1)) + page_bytes - 1});
        const std::uint64_t min_bytes = (rng() % 4) * page_bytes;
        std::vector<virt_range> want;
        for (const auto& g : m.gaps(window))
            if (size_of(g) >= min_bytes) want.push_back(g);
        CHECK(collect_at_least(index, window, walk_order::bottom_up, min_bytes) == want);
        auto down = want;
        std::reverse(down.begin(), down.end());
        CHECK(collect_at_least(index, window, walk_order::top_down, min_bytes) == down);
        auto by_size = want;
        std::stable_sort(by_size.begin(), by_size.end(),
                         [](const virt_range& a, const virt_range& b) { return size_of(a) < size_of(b); });
        CHECK(collect_by_size(index, window, min_bytes) == by_size);
    }
}

TEST_CASE("size order is the same whether the window meets few ranges or many") {
    // 64 ranges of 1-5 pages, 16 pages apart: in size order, a window over
    // two or three of them meets dozens of ranges outside it in a row (the
    // walk goes on window by window), a wide one does not.
    std::vector<gap_index::node> storage(70);
    gap_index index(storage);
    for (std::uint64_t i = 0; i < 64; ++i) index.add_free(pages(0x100000 + i * 0x10000, 1 + (i * 7) % 5));
    const auto all = virt_range::everything();
    for (const std::uint64_t first : {0x1a1000ULL, 0x100000ULL, 0x130000ULL, 0x0ULL})
        for (const std::uint64_t length : {0x2f000ULL, 0x40000ULL, 0x400000ULL})
            for (const std::uint64_t min_bytes : {std::uint64_t{0}, 2 * page_bytes, 4 * page_bytes}) {
                const auto window = virt_range::of(virt_addr{first}, length);
                CAPTURE(first, length, min_bytes);
                auto want = collect_at_least(index, window, walk_order::bottom_up, min_bytes);
                std::stable_sort(want.begin(), want.end(),
                                 [](const virt_range& a, const virt_range& b) { return size_of(a) < size_of(b); });
                CHECK(collect_by_size(index, window, min_bytes) == want);
            }
    CHECK(collect_by_size(index, all, 0).size() == 64);
}
