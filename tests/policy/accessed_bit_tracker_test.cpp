#include <catch2/catch.hpp>

#include <array>

#include "asreloc/policy/accessed_bit_tracker.hpp"
#include "asreloc/reference/page_table.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;
using ref = reference::page_table;

static_assert(sampling_hotness_tracker<accessed_bit_tracker<>, ref>);

namespace {
constexpr std::uint64_t base = 0x4000'0000;
virt_range pages(std::uint64_t first, std::uint64_t n) {
    return virt_range::of(virt_addr{base + first * page_bytes}, n * page_bytes);
}
}  // namespace

TEST_CASE("sampling harvests accessed bits per slot and clears them") {
    ref pt;
    REQUIRE(pt.map(pages(0, 8), phys_addr{0x10'0000}, read_write, page_size::size_4k).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{base + 2 * page_bytes}, false).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{base + 5 * page_bytes + 8}, true).has_value());
    accessed_bit_tracker<> t;
    auto f = t.sample(pt, pages(0, 16));
    REQUIRE(f.has_value());
    CHECK_FALSE(f->empty());
    CHECK(t.hotness(pages(2, 1)) == 1u << 8);
    CHECK(t.hotness(pages(5, 1)) == 1u << 8);
    CHECK(t.hotness(pages(0, 2)) == 0);
    // The bits were cleared: a second harvest adds nothing.
    auto again = t.sample(pt, pages(0, 16));
    REQUIRE(again.has_value());
    CHECK(again->empty());
    CHECK(t.hotness(pages(0, 8)) == 2u << 8);
    auto q = pt.query_and_clear(pages(0, 8), ad_bits::none);
    REQUIRE(q.has_value());
    CHECK(q->accessed_pages == 0);
    CHECK(q->dirty_pages == 1);  // dirty bits are left alone
}

TEST_CASE("a slot touched every period turns hot, one left alone decays to cold") {
    ref pt;
    REQUIRE(pt.map(pages(0, 512), phys_addr{0x10'0000}, read_write, page_size::size_4k).has_value());
    accessed_bit_tracker<> t{hotness_config{.granularity = 64 * page_bytes}};
    for (int period = 0; period < 6; ++period) {
        for (int p = 0; p < 8; ++p)  // 8 pages: heat settles around 8..16 accesses, above the hot threshold
            REQUIRE(pt.mark_accessed(virt_addr{base + p * page_bytes}, false).has_value());
        if (period < 2) REQUIRE(pt.mark_accessed(virt_addr{base + 100 * page_bytes}, false).has_value());
        auto f = t.sample(pt, pages(0, 512));
        REQUIRE(f.has_value());
        t.age();
        t.record_access(virt_addr{base + 200 * page_bytes}, 0);  // zero counts change nothing
    }
    CHECK_FALSE(t.is_cold(pages(0, 1)));
    CHECK(t.is_cold(pages(64, 64)));
    CHECK(t.hotness(pages(64, 64)) < t.hotness(pages(0, 64)));
    const std::array<virt_range, 3> candidates{pages(0, 64), pages(64, 64), pages(128, 64)};
    auto c = t.coldest_of(candidates);
    REQUIRE(c.has_value());
    CHECK(*c == pages(128, 64));
}

TEST_CASE("bad sample ranges are refused before any bit is cleared") {
    ref pt;
    REQUIRE(pt.map(pages(0, 1), phys_addr{0x10'0000}, read_write, page_size::size_4k).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{base}, false).has_value());
    accessed_bit_tracker<> t;
    CHECK(failed_with(t.sample(pt, virt_range::of(virt_addr{base + 1}, page_bytes)), error::misaligned));
    CHECK(failed_with(t.sample(pt, virt_range::of(virt_addr{0x7fff'ffff'f000}, 2 * page_bytes)), error::non_canonical));
    CHECK(t.tracked() == 0);
    auto q = pt.query_and_clear(pages(0, 1), ad_bits::none);
    REQUIRE(q.has_value());
    CHECK(q->accessed_pages == 1);
}

TEST_CASE("the accessed-bit tracker samples the x86-64 backend") {
    constexpr std::size_t frames = 64;
    using memory = test::sim_memory<frames>;
    using x86_space = x86_64::page_table<frame_pool<frames>, memory>;
    static_assert(sampling_hotness_tracker<accessed_bit_tracker<>, x86_space>);
    memory mem;
    auto pt = x86_space::create(mem.frames(), mem, x86_64::paging_mode::four_level);
    REQUIRE(pt.has_value());
    auto m = pt->map(pages(0, 4), phys_addr{0x20'0000}, read_write, page_size::size_4k);
    REQUIRE(m.has_value());
    m->ignore();
    accessed_bit_tracker<> t;
    auto f = t.sample(*pt, pages(0, 4));  // fresh tables: nothing accessed yet
    REQUIRE(f.has_value());
    CHECK(t.hotness(pages(0, 4)) == 0);
    CHECK(t.is_cold(pages(0, 4)));
}
