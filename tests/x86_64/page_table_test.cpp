// The x86-64 backend on its own: map, translate, unmap and protect with every
// page size in both paging modes, splits that keep every bit, coalescing back,
// table frames given back, precise flushes, gap walks, accessed/dirty harvest
// and rights combined along the walk. Raw entries are read with a walker of
// this file's own, so the architectural format is checked, not only the API.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "asreloc/x86_64/page_table.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;
using asreloc::x86_64::paging_mode;

namespace {

constexpr std::size_t frames = 2048;
using memory = test::sim_memory<frames>;
using pool = frame_pool<frames>;
using space = x86_64::page_table<pool, memory>;

constexpr std::uint64_t kib4 = 0x1000;
constexpr std::uint64_t mib2 = 0x20'0000;
constexpr std::uint64_t gib1 = 0x4000'0000;

virt_range range_of(std::uint64_t start, std::uint64_t size) { return virt_range::of(virt_addr{start}, size); }

space make_space(memory& mem, paging_mode mode, x86_64::features f = {}) {
    auto made = space::create(mem.frames(), mem, mode, f);
    REQUIRE(made.has_value());
    return std::move(*made);
}

// The entry of the `level` table that translates va, found by walking the
// raw tables; null when the walk ends (not present or a leaf) above `level`.
template <class Space, class Map>
std::uint64_t* slot_at(const Map& mem, const Space& pt, std::uint64_t va, unsigned level) {
    auto* table = reinterpret_cast<std::uint64_t*>(mem.to_virt(pt.root()));
    for (unsigned l = x86_64::levels(pt.mode()); l > level; --l) {
        const x86_64::entry e{table[x86_64::table_index(va, l)]};
        if (!e.present() || e.is_leaf(l)) return nullptr;
        table = reinterpret_cast<std::uint64_t*>(mem.to_virt(e.table_address()));
    }
    return &table[x86_64::table_index(va, level)];
}
std::uint64_t raw_at(const memory& mem, const space& pt, std::uint64_t va, unsigned level) {
    const auto* slot = slot_at(mem, pt, va, level);
    REQUIRE(slot != nullptr);
    return *slot;
}

template <class Space>
std::vector<mapping> mappings_in(const Space& pt, virt_range window = virt_range::everything(),
                                 walk_order order = walk_order::bottom_up) {
    std::vector<mapping> out;
    const auto r = pt.for_each_mapping(window, order, [&](const mapping& m) {
        out.push_back(m);
        return walk_control::proceed;
    });
    REQUIRE(r.has_value());
    return out;
}
template <class Space>
std::vector<virt_range> gaps_in(const Space& pt, virt_range window = virt_range::everything(),
                                walk_order order = walk_order::bottom_up) {
    std::vector<virt_range> out;
    const auto r = pt.for_each_gap(window, order, [&](const virt_range& g) {
        out.push_back(g);
        return walk_control::proceed;
    });
    REQUIRE(r.has_value());
    return out;
}
template <class Space>
std::size_t table_count(const Space& pt) {
    std::size_t n = 0;
    pt.for_each_table([&](unsigned, phys_addr) { ++n; });
    return n;
}
void require_ok(const result<flush>& r) {
    if (!r) FAIL("failed with " << to_string(r.error_code()));
}
flush ok(const result<flush>& r) {
    require_ok(r);
    return *r;
}

// The first address of each mode's upper canonical half.
std::uint64_t upper_half(paging_mode m) {
    return m == paging_mode::four_level ? 0xffff'8000'0000'0000 : 0xff00'0000'0000'0000;
}

}  // namespace

TEST_CASE("pages of 4 KiB, 2 MiB and 1 GiB map, translate and unmap in both halves with 4- and 5-level paging") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const auto free_at_start = mem.frames().free_count();

    std::vector<std::uint64_t> bases = {0x0000'0080'0000'0000, upper_half(mode)};
    if (mode == paging_mode::five_level) bases.push_back(0x0001'0000'0000'0000);  // above 48 bits
    const attributes attrs{.writable = true, .user = true, .executable = false, .memory_type = 6, .protection_key = 2};
    for (const auto base : bases) {
        CAPTURE(base);
        struct case_ {
            std::uint64_t offset;
            page_size size;
            std::uint64_t phys;
        };
        const case_ cases[] = {{kib4, page_size::size_4k, 0x7'0000'3000},
                               {gib1 + mib2 * 3, page_size::size_2m, 0x7'0060'0000},
                               {gib1 * 4, page_size::size_1g, 0x7'8000'0000}};
        for (const auto& c : cases) {
            const auto range = range_of(base + c.offset, 2 * bytes(c.size));
            const auto flushed = pt.map(range, phys_addr{c.phys}, attrs, c.size);
            require_ok(flushed);
            CHECK(flushed->empty());  // only not-present entries became present
            for (const std::uint64_t page : {std::uint64_t{0}, std::uint64_t{1}}) {
                const auto probe = base + c.offset + page * bytes(c.size) + 0x123;
                const auto t = pt.translate(virt_addr{probe});
                REQUIRE(t.has_value());
                CHECK(t->phys == phys_addr{c.phys + page * bytes(c.size) + 0x123});
                CHECK(t->page.start == virt_addr{base + c.offset + page * bytes(c.size)});
                CHECK(t->page.size == c.size);
                CHECK(t->page.attrs == attrs);
                CHECK_FALSE(t->page.accessed);
            }
            CHECK(failed_with(pt.translate(virt_addr{base + c.offset + 2 * bytes(c.size)}), error::not_mapped));
        }
        CHECK(mappings_in(pt).size() == 6);
        for (const auto& c : cases) {
            const auto range = range_of(base + c.offset, 2 * bytes(c.size));
            const auto flushed = pt.unmap(range);
            require_ok(flushed);
            CHECK(*flushed == flush::of(range));
            CHECK(failed_with(pt.translate(virt_addr{base + c.offset}), error::not_mapped));
        }
        CHECK(mappings_in(pt).empty());
        CHECK(mem.frames().free_count() == free_at_start);
        CHECK(table_count(pt) == 1);
    }
}

TEST_CASE("map creates exactly the tables a walk needs and unmap frees each table it empties") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    const std::size_t above_pd = mode == paging_mode::four_level ? 1 : 2;  // PDPT (and PML4) below the root
    memory mem;
    auto pt = make_space(mem, mode);
    const auto start = mem.frames().free_count();

    require_ok(pt.map(range_of(0x1000, kib4), phys_addr{0x9000}, read_write, page_size::size_4k));
    CHECK(start - mem.frames().free_count() == above_pd + 2);  // ..., PD, PT
    require_ok(pt.map(range_of(0x20'0000, kib4), phys_addr{0xa000}, read_write, page_size::size_4k));
    CHECK(start - mem.frames().free_count() == above_pd + 3);  // a second PT under the same PD
    require_ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0x20'0000}, read_write, page_size::size_2m));
    CHECK(start - mem.frames().free_count() == above_pd + 4);  // a second PD, no PT
    CHECK(table_count(pt) == 1 + above_pd + 4);

    require_ok(pt.unmap(range_of(0x1000, kib4)));
    CHECK(start - mem.frames().free_count() == above_pd + 3);  // its PT went back
    require_ok(pt.unmap(range_of(0x4000'0000, mib2)));
    CHECK(start - mem.frames().free_count() == above_pd + 2);  // the second PD went back
    require_ok(pt.unmap(range_of(0x20'0000, kib4)));
    CHECK(mem.frames().free_count() == start);  // everything below the root went back
    CHECK(table_count(pt) == 1);
    const auto* root = reinterpret_cast<const std::uint64_t*>(mem.to_virt(pt.root()));
    for (unsigned i = 0; i < 512; ++i) CHECK(root[i] == 0);
}

TEST_CASE("destroying a space gives every table back to the allocator") {
    memory mem;
    const auto before = mem.frames().free_count();
    {
        auto pt = make_space(mem, paging_mode::five_level);
        require_ok(pt.map(range_of(gib1 - kib4, 2 * kib4), phys_addr{0x1000}, read_write, page_size::size_4k));
        require_ok(pt.map(range_of(0xff00'0000'0000'0000, mib2), phys_addr{0}, read_write, page_size::size_2m));
        // The root; a PML4, a PDPT, two PDs and two PTs; a PML4, a PDPT and a PD.
        CHECK(before - mem.frames().free_count() == 1 + 6 + 3);
    }
    CHECK(mem.frames().free_count() == before);
}

TEST_CASE("unmap of part of a 2 MiB page splits it and keeps every attribute, PAT moving to bit 7") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const std::uint64_t va = 0x4000'0000;
    const std::uint64_t phys = 0x1'2340'0000;
    const attributes attrs{.writable = true, .user = false, .executable = false, .global = true, .memory_type = 5,
                           .protection_key = 9};
    require_ok(pt.map(range_of(va, mib2), phys_addr{phys}, attrs, page_size::size_2m));
    REQUIRE(pt.mark_accessed(virt_addr{va + 0x1234}, true).has_value());
    // P R/W PWT A D PS G PAT(12) = 0x11eb; key 9 = 1001b in 62:59; XD.
    const std::uint64_t pde = 0xc800'0001'2340'11eb;
    REQUIRE(raw_at(mem, pt, va, 2) == pde);
    const auto tables = table_count(pt);

    const auto flushed = pt.unmap(range_of(va + 5 * kib4, kib4));
    require_ok(flushed);
    CHECK(*flushed == flush::of(range_of(va, mib2)));  // the 2 MiB translation is gone too
    CHECK(table_count(pt) == tables + 1);
    CHECK((raw_at(mem, pt, va, 2) & 0xfff) == 0x007);  // now a table entry: P R/W U/S, PS clear

    // P R/W PWT A D PAT(7) G = 0x1eb, the same key and XD, consecutive frames.
    for (unsigned i = 0; i < 512; ++i) {
        INFO("page " << i);
        const auto raw = raw_at(mem, pt, va + i * kib4, 1);
        if (i == 5) CHECK(raw == 0);
        else CHECK(raw == (0xc800'0000'0000'01eb | (phys + i * kib4)));
    }
    const auto left = mappings_in(pt);
    REQUIRE(left.size() == 511);
    for (const auto& m : left) {
        CHECK(m.size == page_size::size_4k);
        CHECK(m.attrs == attrs);
        CHECK(m.accessed);
        CHECK(m.dirty);
        CHECK(m.phys == phys_addr{phys + (m.start.value() - va)});
    }
    CHECK(failed_with(pt.translate(virt_addr{va + 5 * kib4}), error::not_mapped));
}

TEST_CASE("protect of the middle of a 1 GiB page splits both ends down to 4 KiB, PAT staying at bit 12 in 2 MiB pieces") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const std::uint64_t va = upper_half(mode) + 4 * gib1;
    const std::uint64_t phys = 0x40'0000'0000;
    const attributes before{.user = true, .executable = true, .memory_type = 4, .protection_key = 3};
    const attributes after{.writable = true, .executable = false, .memory_type = 3};
    require_ok(pt.map(range_of(va, gib1), phys_addr{phys}, before, page_size::size_1g));
    CHECK(raw_at(mem, pt, va, 3) == (0x1800'0000'0000'1085 | phys));  // P U/S PS PAT(12), key 3
    const auto free_before = mem.frames().free_count();

    // From page 1 of the second 2 MiB piece to page 3 of the fourth.
    const auto range = virt_range::from_bounds(virt_addr{va + mib2 + kib4}, virt_addr{va + 3 * mib2 + 3 * kib4 - 1});
    const auto flushed = pt.protect(range, after);
    require_ok(flushed);
    CHECK(*flushed == flush::of(range_of(va, gib1)));
    CHECK(free_before - mem.frames().free_count() == 3);  // one PD, two PTs

    // 2 MiB pieces: P U/S PS PAT(12) key 3 where untouched, P R/W PWT PCD PS XD where covered.
    CHECK(raw_at(mem, pt, va, 2) == (0x1800'0000'0000'1085 | phys));
    CHECK(raw_at(mem, pt, va + 2 * mib2, 2) == (0x8000'0000'0000'009b | (phys + 2 * mib2)));
    CHECK(raw_at(mem, pt, va + 511 * mib2, 2) == (0x1800'0000'0000'1085 | (phys + 511 * mib2)));
    // 4 KiB pieces: PAT at bit 7 where untouched.
    CHECK(raw_at(mem, pt, va + mib2, 1) == (0x1800'0000'0000'0085 | (phys + mib2)));
    CHECK(raw_at(mem, pt, va + mib2 + kib4, 1) == (0x8000'0000'0000'001b | (phys + mib2 + kib4)));
    CHECK(raw_at(mem, pt, va + 2 * mib2 - kib4, 1) == (0x8000'0000'0000'001b | (phys + 2 * mib2 - kib4)));
    CHECK(raw_at(mem, pt, va + 3 * mib2 + 2 * kib4, 1) == (0x8000'0000'0000'001b | (phys + 3 * mib2 + 2 * kib4)));
    CHECK(raw_at(mem, pt, va + 3 * mib2 + 3 * kib4, 1) == (0x1800'0000'0000'0085 | (phys + 3 * mib2 + 3 * kib4)));

    // Every byte still maps where it did; only the covered pages changed rights.
    for (const auto& m : mappings_in(pt)) {
        CHECK(m.phys == phys_addr{phys + (m.start - virt_addr{va})});
        CHECK(m.attrs == (range.contains(m.range()) ? after : before));
        CHECK((range.contains(m.range()) || !range.overlaps(m.range())));
    }
    CHECK(mappings_in(pt).size() == 510 + 1024);  // 2 MiB pieces 0, 2, 4..511; two tables of 4 KiB
}

TEST_CASE("coalesce merges a split 2 MiB page back into the original entry and frees its table") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    const std::uint64_t va = 0x4000'0000;
    const attributes attrs{.writable = true, .global = true, .memory_type = 7, .protection_key = 1};
    require_ok(pt.map(range_of(va, mib2), phys_addr{0x8060'0000}, attrs, page_size::size_2m));
    const auto original = raw_at(mem, pt, va, 2);
    const auto free_before = mem.frames().free_count();

    require_ok(pt.unmap(range_of(va + 7 * kib4, kib4)));
    require_ok(pt.map(range_of(va + 7 * kib4, kib4), phys_addr{0x8060'7000}, attrs, page_size::size_4k));
    REQUIRE(mem.frames().free_count() == free_before - 1);

    // A range that does not hold the whole 2 MiB page merges nothing.
    const auto partial = pt.coalesce(range_of(va, mib2 - kib4));
    REQUIRE(partial.has_value());
    CHECK(partial->empty());

    const auto merged = pt.coalesce(range_of(0, 4 * gib1));
    REQUIRE(merged.has_value());
    CHECK(*merged == flush::of(range_of(va, mib2)));
    CHECK(raw_at(mem, pt, va, 2) == original);
    CHECK(mem.frames().free_count() == free_before);
}

TEST_CASE("coalesce ORs A and D of the pieces into the merged page") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(mib2, mib2), phys_addr{mib2}, read_write, page_size::size_4k));
    REQUIRE(pt.mark_accessed(virt_addr{mib2 + 9 * kib4}, false).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{mib2 + 300 * kib4}, true).has_value());
    require_ok(pt.coalesce(range_of(0, gib1)));
    const auto m = mappings_in(pt);
    REQUIRE(m.size() == 1);
    CHECK(m[0].size == page_size::size_2m);
    CHECK(m[0].accessed);
    CHECK(m[0].dirty);
}

TEST_CASE("coalesce leaves pieces apart that differ in frame order or attributes") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0, mib2), phys_addr{mib2}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(mib2, mib2), phys_addr{3 * mib2}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(2 * mib2, mib2), phys_addr{8 * mib2 + kib4}, read_write, page_size::size_4k));
    require_ok(pt.protect(range_of(mib2 + 17 * kib4, kib4), read_only));
    // Swap two frames in the first table.
    auto* a = slot_at(mem, pt, 0, 1);
    auto* b = slot_at(mem, pt, kib4, 1);
    std::swap(*a, *b);
    const auto tables = table_count(pt);
    const auto merged = pt.coalesce(range_of(0, gib1));
    REQUIRE(merged.has_value());
    CHECK(merged->empty());
    CHECK(table_count(pt) == tables);
}

TEST_CASE("coalesce folds 512 contiguous 2 MiB pages into a 1 GiB page unless 1 GiB pages are off") {
    const bool pages_1g = GENERATE(true, false);
    CAPTURE(pages_1g);
    memory mem;
    auto pt = make_space(mem, paging_mode::five_level, x86_64::features{.pages_1g = pages_1g});
    const attributes attrs{.user = true, .executable = true, .memory_type = 4};
    require_ok(pt.map(range_of(gib1, gib1), phys_addr{3 * gib1}, attrs, page_size::size_2m));
    const auto free_before = mem.frames().free_count();
    const auto merged = pt.coalesce(range_of(0, 4 * gib1));
    REQUIRE(merged.has_value());
    if (pages_1g) {
        CHECK(*merged == flush::of(range_of(gib1, gib1)));
        CHECK(raw_at(mem, pt, gib1, 3) == (0x1085 | 3 * gib1));  // P U/S PS PAT(12)
        CHECK(mem.frames().free_count() == free_before + 1);
    } else {
        CHECK(merged->empty());
        CHECK(mem.frames().free_count() == free_before);
    }
}

TEST_CASE("coalesce does not merge below a table entry that restricts rights") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0, mib2), phys_addr{0}, read_write, page_size::size_4k));
    *slot_at(mem, pt, 0, 2) &= ~x86_64::bits::read_write;  // the PDE makes the pages read-only
    const auto merged = pt.coalesce(range_of(0, gib1));
    REQUIRE(merged.has_value());
    CHECK(merged->empty());
    const auto t = pt.translate(virt_addr{0});
    REQUIRE(t.has_value());
    CHECK_FALSE(t->page.attrs.writable);
}

TEST_CASE("each flush names the precise range a change touched") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0x10'0000, 16 * kib4), phys_addr{0x10'0000}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(0x4000'0000, 4 * mib2), phys_addr{0x4000'0000}, read_write, page_size::size_2m));

    SECTION("one 4 KiB page") {
        CHECK(ok(pt.unmap(range_of(0x10'3000, kib4))) == flush::of(range_of(0x10'3000, kib4)));
        CHECK(ok(pt.protect(range_of(0x10'5000, kib4), read_only)) == flush::of(range_of(0x10'5000, kib4)));
    }
    SECTION("several 4 KiB pages") {
        CHECK(ok(pt.protect(range_of(0x10'1000, 5 * kib4), read_only)) == flush::of(range_of(0x10'1000, 5 * kib4)));
        CHECK(ok(pt.unmap(range_of(0x10'1000, 5 * kib4))) == flush::of(range_of(0x10'1000, 5 * kib4)));
    }
    SECTION("whole large pages") {
        CHECK(ok(pt.protect(range_of(0x4020'0000, 2 * mib2), read_only)) == flush::of(range_of(0x4020'0000, 2 * mib2)));
        CHECK(ok(pt.unmap(range_of(0x4000'0000, mib2))) == flush::of(range_of(0x4000'0000, mib2)));
    }
    SECTION("a range cutting two large pages widens to both") {
        const auto range = range_of(0x4020'0000 - kib4, 2 * kib4);
        CHECK(ok(pt.unmap(range)) == flush::of(range_of(0x4000'0000, 2 * mib2)));
    }
    SECTION("a range cutting one large page at its end widens to that page only") {
        const auto range = range_of(0x4020'0000, mib2 + kib4);
        CHECK(ok(pt.protect(range, read_only)) == flush::of(range_of(0x4020'0000, 2 * mib2)));
    }
    SECTION("an accessed/dirty harvest flushes the range only when it cleared a bit") {
        auto clean = pt.query_and_clear(range_of(0x10'0000, 16 * kib4), ad_bits::both);
        REQUIRE(clean.has_value());
        CHECK(clean->invalidate.empty());
        REQUIRE(pt.mark_accessed(virt_addr{0x10'2000}, false).has_value());
        auto dirty = pt.query_and_clear(range_of(0x10'0000, 4 * kib4), ad_bits::dirty);
        REQUIRE(dirty.has_value());
        CHECK(dirty->invalidate.empty());  // only A was set, and A was not asked for
        auto harvested = pt.query_and_clear(range_of(0x10'0000, 4 * kib4), ad_bits::accessed);
        REQUIRE(harvested.has_value());
        CHECK(harvested->invalidate == flush::of(range_of(0x10'0000, 4 * kib4)));
    }
}

TEST_CASE("the gap walk returns maximal gaps over the whole space in both orders") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const auto upper = upper_half(mode);
    const std::uint64_t lower_last = mode == paging_mode::four_level ? 0x0000'7fff'ffff'ffff : 0x00ff'ffff'ffff'ffff;
    require_ok(pt.map(range_of(0x1000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(0x2000, kib4), phys_addr{0x5000}, read_only, page_size::size_4k));  // adjacent
    require_ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0}, read_write, page_size::size_2m));
    require_ok(pt.map(range_of(0x8000'0000, gib1), phys_addr{0}, read_write, page_size::size_1g));
    require_ok(pt.map(range_of(0xffff'ffff'ffff'f000, kib4), phys_addr{0}, read_write, page_size::size_4k));

    const std::vector<virt_range> expected = {
        virt_range::from_bounds(virt_addr{0}, virt_addr{0xfff}),
        virt_range::from_bounds(virt_addr{0x3000}, virt_addr{0x3fff'ffff}),
        virt_range::from_bounds(virt_addr{0x4020'0000}, virt_addr{0x7fff'ffff}),
        virt_range::from_bounds(virt_addr{0xc000'0000}, virt_addr{lower_last}),
        virt_range::from_bounds(virt_addr{upper}, virt_addr{0xffff'ffff'ffff'efff}),
    };
    CHECK(gaps_in(pt) == expected);
    CHECK(gaps_in(pt, virt_range::everything(), walk_order::top_down) ==
          std::vector<virt_range>(expected.rbegin(), expected.rend()));

    const auto all = mappings_in(pt);
    REQUIRE(all.size() == 5);
    CHECK(all[0].start == virt_addr{0x1000});
    CHECK(all[4].start == virt_addr{0xffff'ffff'ffff'f000});
    const auto reversed = mappings_in(pt, virt_range::everything(), walk_order::top_down);
    CHECK(reversed == std::vector<mapping>(all.rbegin(), all.rend()));
}

TEST_CASE("the gap walk clips to its window and reports nothing outside the canonical halves") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0}, read_write, page_size::size_2m));
    require_ok(pt.map(range_of(0xffff'8000'0000'0000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    using v = std::vector<virt_range>;
    const auto b = [](std::uint64_t first, std::uint64_t last) {
        return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
    };

    CHECK(gaps_in(pt, b(0x3fff'0000, 0x4040'ffff)) == v{b(0x3fff'0000, 0x3fff'ffff), b(0x4020'0000, 0x4040'ffff)});
    CHECK(gaps_in(pt, b(0x3fff'0000, 0x4040'ffff), walk_order::top_down) ==
          v{b(0x4020'0000, 0x4040'ffff), b(0x3fff'0000, 0x3fff'ffff)});
    CHECK(gaps_in(pt, b(0x10'0000, 0x10'ffff)) == v{b(0x10'0000, 0x10'ffff)});  // inside one gap
    CHECK(gaps_in(pt, b(0x4010'0000, 0x401f'ffff)).empty());                   // inside the mapping
    CHECK(gaps_in(pt, b(0x7fff'0000'0000, 0xffff'8000'0000'ffff)) ==
          v{b(0x7fff'0000'0000, 0x7fff'ffff'ffff), b(0xffff'8000'0000'1000, 0xffff'8000'0000'ffff)});
    CHECK(gaps_in(pt, b(0x8000'0000'0000, 0xffff'7fff'ffff'ffff)).empty());  // the non-canonical hole

    // A leaf is reported whole even where the window holds a part of it.
    const auto inside = mappings_in(pt, b(0x4010'0000, 0x4010'0fff));
    REQUIRE(inside.size() == 1);
    CHECK(inside[0].range() == range_of(0x4000'0000, mib2));
}

TEST_CASE("a walk stops when its visitor says stop and says so") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0x1000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(0x3000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    int gaps = 0;
    const auto g = pt.for_each_gap(virt_range::everything(), walk_order::top_down, [&](const virt_range&) {
        ++gaps;
        return walk_control::stop;
    });
    CHECK(*g == walk_control::stop);
    CHECK(gaps == 1);
    int maps = 0;
    const auto m = pt.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [&](const mapping& x) {
        ++maps;
        CHECK(x.start == virt_addr{0x1000});
        return walk_control::stop;
    });
    CHECK(*m == walk_control::stop);
    CHECK(maps == 1);
    CHECK(*pt.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [](const mapping&) {
        return walk_control::proceed;
    }) == walk_control::proceed);
}

namespace {
// A phys map that counts the table pages a walk reads.
struct counting_map {
    const memory* mem;
    mutable std::size_t reads = 0;
    std::byte* to_virt(phys_addr p) const noexcept {
        ++reads;
        return mem->to_virt(p);
    }
};
}  // namespace

TEST_CASE("the walks read only the tables of the populated part of the window, skipping absent subtrees") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    counting_map reads{&mem};
    using counted = x86_64::page_table<pool, counting_map>;
    auto made = counted::create(mem.frames(), reads, mode);
    REQUIRE(made.has_value());
    auto& pt = *made;
    const auto levels = x86_64::levels(mode);

    reads.reads = 0;
    CHECK(gaps_in(pt).size() == 2);  // the two canonical halves
    CHECK(reads.reads == 1);         // the root alone

    require_ok(pt.map(range_of(0x1234'5000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    reads.reads = 0;
    CHECK(gaps_in(pt).size() == 3);
    CHECK(reads.reads == levels);  // one table per level on the one populated path
    reads.reads = 0;
    CHECK(mappings_in(pt, virt_range::everything(), walk_order::top_down).size() == 1);
    CHECK(reads.reads == levels);
    reads.reads = 0;
    CHECK(gaps_in(pt, range_of(0x80'0000'0000, 0x80'0000'0000)).size() == 1);  // another top-level entry
    CHECK(reads.reads == (mode == paging_mode::four_level ? 1u : 2u));
}

TEST_CASE("query_and_clear counts 4 KiB pages with A and D set and clears only the bits asked") {
    memory mem;
    auto pt = make_space(mem, paging_mode::five_level);
    require_ok(pt.map(range_of(0x10'0000, 8 * kib4), phys_addr{0x10'0000}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0x4000'0000}, read_write, page_size::size_2m));
    REQUIRE(pt.mark_accessed(virt_addr{0x10'0010}, false).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{0x10'1fff}, true).has_value());
    REQUIRE(pt.mark_accessed(virt_addr{0x4000'1234}, true).has_value());
    CHECK((raw_at(mem, pt, 0x10'1000, 1) & 0x60) == 0x60);
    CHECK((raw_at(mem, pt, 0x10'0000, 1) & 0x60) == 0x20);
    CHECK((raw_at(mem, pt, 0x10'0000, 2) & 0x20) == 0x20);  // A set on the way, too

    const auto harvest = [&](virt_range range, ad_bits clear) {
        const auto r = pt.query_and_clear(range, clear);
        REQUIRE(r.has_value());
        return *r;
    };
    // Nothing cleared: a pure query. Unmapped parts are skipped.
    auto q = harvest(range_of(0x0f'0000, 0x2'0000), ad_bits::none);
    CHECK(q.accessed_pages == 2);
    CHECK(q.dirty_pages == 1);
    CHECK(q.invalidate.empty());

    // Three 4 KiB pages of the 2 MiB page count three times; clearing A clears the whole leaf.
    q = harvest(range_of(0x4010'0000, 3 * kib4), ad_bits::accessed);
    CHECK(q.accessed_pages == 3);
    CHECK(q.dirty_pages == 3);
    CHECK((raw_at(mem, pt, 0x4000'0000, 2) & 0x60) == 0x40);
    q = harvest(range_of(0x4000'0000, mib2), ad_bits::both);
    CHECK(q.accessed_pages == 0);
    CHECK(q.dirty_pages == 512);
    CHECK((raw_at(mem, pt, 0x4000'0000, 2) & 0x60) == 0);

    q = harvest(range_of(0x10'0000, 8 * kib4), ad_bits::both);
    CHECK(q.accessed_pages == 2);
    CHECK(q.dirty_pages == 1);
    q = harvest(range_of(0x10'0000, 8 * kib4), ad_bits::both);
    CHECK(q.accessed_pages == 0);
    CHECK(q.dirty_pages == 0);
    for (const auto& m : mappings_in(pt)) {
        CHECK_FALSE(m.accessed);
        CHECK_FALSE(m.dirty);
    }
}

TEST_CASE("effective permissions combine R/W, U/S and XD of every entry along the walk") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const attributes all{.writable = true, .user = true, .executable = true, .global = true, .memory_type = 2,
                         .protection_key = 5};
    require_ok(pt.map(range_of(0x1000, kib4), phys_addr{0x9000}, all, page_size::size_4k));
    require_ok(pt.map(range_of(0x20'0000, mib2), phys_addr{0}, all, page_size::size_2m));
    const auto attrs_at = [&](std::uint64_t va) {
        const auto t = pt.translate(virt_addr{va});
        REQUIRE(t.has_value());
        const auto walked = mappings_in(pt, range_of(va & ~(kib4 - 1), kib4));
        REQUIRE(walked.size() == 1);
        CHECK(walked[0].attrs == t->page.attrs);  // both walks combine the same way
        return t->page.attrs;
    };
    CHECK(attrs_at(0x1000) == all);

    *slot_at(mem, pt, 0x1000, 2) &= ~x86_64::bits::read_write;  // the PDE denies writes
    auto a = attrs_at(0x1000);
    CHECK_FALSE(a.writable);
    CHECK(a.user);
    CHECK(a.executable);

    *slot_at(mem, pt, 0x1000, 3) &= ~x86_64::bits::user_supervisor;  // the PDPTE denies user access
    *slot_at(mem, pt, 0x1000, 4) |= x86_64::bits::execute_disable;   // the PML4E sets XD
    a = attrs_at(0x1000);
    CHECK(a == attributes{.writable = false, .user = false, .executable = false, .global = true, .memory_type = 2,
                          .protection_key = 5});
    // The 2 MiB page is the next PDE: it shares the PDPTE and the PML4E only.
    CHECK(attrs_at(0x20'0000) == attributes{.writable = true, .user = false, .executable = false, .global = true,
                                              .memory_type = 2, .protection_key = 5});

    // Setting R/W back on a lower entry does not undo a denial above it.
    *slot_at(mem, pt, 0x1000, 4) &= ~x86_64::bits::read_write;
    *slot_at(mem, pt, 0x1000, 2) |= x86_64::bits::read_write;
    CHECK_FALSE(attrs_at(0x1000).writable);
}

TEST_CASE("mark_accessed sets A along the walk and D in the leaf only on a write") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0x1000, 2 * kib4), phys_addr{0}, read_write, page_size::size_4k));
    REQUIRE(pt.mark_accessed(virt_addr{0x1000}, false).has_value());
    for (unsigned level = 4; level >= 2; --level) CHECK((raw_at(mem, pt, 0x1000, level) & 0x60) == 0x20);
    CHECK((raw_at(mem, pt, 0x1000, 1) & 0x60) == 0x20);
    CHECK((raw_at(mem, pt, 0x2000, 1) & 0x60) == 0);
    REQUIRE(pt.mark_accessed(virt_addr{0x2000}, true).has_value());
    CHECK((raw_at(mem, pt, 0x2000, 1) & 0x60) == 0x60);
    CHECK(failed_with(pt.mark_accessed(virt_addr{0x3000}, true), error::not_mapped));
}

TEST_CASE("adopted tables are changed in place and not freed with the space") {
    memory mem;
    auto owner = make_space(mem, paging_mode::four_level);
    require_ok(owner.map(range_of(0x1000, kib4), phys_addr{0x9000}, read_write, page_size::size_4k));
    const auto free_before = mem.frames().free_count();
    {
        auto view = space::adopt(mem.frames(), mem, paging_mode::four_level, owner.root());
        const auto t = view.translate(virt_addr{0x1000});
        REQUIRE(t.has_value());
        CHECK(t->phys == phys_addr{0x9000});
        require_ok(view.map(range_of(0x2000, kib4), phys_addr{0xa000}, read_only, page_size::size_4k));
    }
    CHECK(mem.frames().free_count() == free_before);
    CHECK(owner.translate(virt_addr{0x2000})->phys == phys_addr{0xa000});
}

TEST_CASE("after random changes every table below the root holds an entry and the allocator holds only tables") {
    const auto seed = test::test_seed();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    std::mt19937_64 rng{seed};
    const auto below = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>{0, n - 1}(rng); };
    memory mem;
    auto pt = make_space(mem, mode);
    // Two 2 GiB clusters, one per half, so that pages meet, split and merge.
    const std::uint64_t clusters[] = {gib1 * 510, upper_half(mode) + gib1 * 3};
    const page_size sizes[] = {page_size::size_4k, page_size::size_2m, page_size::size_1g};
    for (int op = 0; op < 2000; ++op) {
        const auto base = clusters[below(2)];
        const auto size = sizes[below(10) < 6 ? 0 : below(4) < 3 ? 1 : 2];
        const auto unit = bytes(size);
        const auto start = base + below(2 * gib1 / unit) * unit;
        const auto count = 1 + below(size == page_size::size_4k ? 600 : 2);
        const auto range = range_of(start, std::min(count * unit, base + 2 * gib1 - start));
        const auto small = range_of(start + below(512) * kib4, (1 + below(700)) * kib4);
        switch (below(4)) {
        case 0: (void)pt.map(range, phys_addr{start & 0xf'ffff'ffff'f000}, read_write, size); break;
        case 1: (void)pt.unmap(small); break;
        case 2: (void)pt.protect(small, attributes{.user = true, .memory_type = static_cast<std::uint8_t>(below(8))}); break;
        default: (void)pt.coalesce(range_of(base, 2 * gib1)); break;
        }
        if (op % 250 != 249) continue;
        INFO("after operation " << op);
        std::size_t tables = 0;
        std::size_t empty_tables = 0;
        pt.for_each_table([&](unsigned level, phys_addr table) {
            ++tables;
            const auto* raw = reinterpret_cast<const std::uint64_t*>(mem.to_virt(table));
            bool any = false;
            for (unsigned i = 0; i < 512; ++i) any = any || (raw[i] & x86_64::bits::present) != 0;
            if (!any && level != x86_64::levels(mode)) ++empty_tables;
        });
        CHECK(empty_tables == 0);
        CHECK(tables == mem.frames().allocated_count());
        // Every leaf holds exactly the bits its mapping says, nothing ignored or reserved.
        std::size_t odd_leaves = 0;
        for (const auto& m : mappings_in(pt)) {
            const unsigned level = m.size == page_size::size_4k ? 1 : m.size == page_size::size_2m ? 2 : 3;
            const auto* slot = slot_at(mem, pt, m.start.value(), level);
            if (slot == nullptr || *slot != x86_64::make_leaf(level, m.phys, m.attrs, m.accessed, m.dirty).raw()) ++odd_leaves;
        }
        CHECK(odd_leaves == 0);
    }
}

TEST_CASE("a large page mapped where a table was left empty gives the table back and flushes its range") {
    // Tables a guest built may keep a table whose entries it cleared (Linux
    // keeps page tables after munmap); only the entry above still points to it.
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    const auto start = mem.frames().free_count();
    require_ok(pt.map(range_of(0x1000, kib4), phys_addr{0x9000}, read_write, page_size::size_4k));
    require_ok(pt.map(range_of(gib1 + 0x1000, kib4), phys_addr{0x9000}, read_write, page_size::size_4k));
    REQUIRE(start - mem.frames().free_count() == 5);  // PDPT, two PDs, two PTs
    *slot_at(mem, pt, 0x1000, 1) = 0;
    *slot_at(mem, pt, gib1 + 0x1000, 1) = 0;

    const auto two_mib = pt.map(range_of(0, mib2), phys_addr{0}, read_write, page_size::size_2m);
    require_ok(two_mib);
    CHECK(*two_mib == flush::of(range_of(0, mib2)));  // the CPU may cache the entry that pointed to the table
    CHECK(raw_at(mem, pt, 0, 2) == x86_64::make_leaf(2, phys_addr{0}, read_write).raw());
    CHECK(start - mem.frames().free_count() == 4);

    const auto one_gib = pt.map(range_of(gib1, gib1), phys_addr{0}, read_write, page_size::size_1g);
    require_ok(one_gib);
    CHECK(*one_gib == flush::of(range_of(gib1, gib1)));
    CHECK(start - mem.frames().free_count() == 2);  // its PD and PT went back
    CHECK(table_count(pt) == 3);
    CHECK(mappings_in(pt).size() == 2);
}

TEST_CASE("splits, protect and coalesce keep the bits the CPU ignores, which a guest OS uses for its own bookkeeping") {
    // Bits 11:9 and 58:52 of a leaf are ignored by the processor (Tables 4-16,
    // 4-18, 4-20); Linux keeps e.g. _PAGE_SPECIAL and soft-dirty there.
    const std::uint64_t software = (std::uint64_t{1} << 9) | (std::uint64_t{1} << 11) | (std::uint64_t{1} << 52) |
                                   (std::uint64_t{1} << 58);
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    const attributes attrs{.writable = true, .executable = false, .memory_type = 4, .protection_key = 2};
    require_ok(pt.map(range_of(gib1, gib1), phys_addr{gib1}, attrs, page_size::size_1g));
    *slot_at(mem, pt, gib1, 3) |= software;
    const auto original = raw_at(mem, pt, gib1, 3);

    // Cut the 1 GiB page down to 4 KiB at 4 KiB page 5 of its second 2 MiB piece.
    const std::uint64_t cut = gib1 + mib2 + 5 * kib4;
    require_ok(pt.protect(range_of(cut, kib4), attributes{.writable = true, .executable = false, .memory_type = 4,
                                                          .protection_key = 2}));
    // P R/W PS PAT(12) + software bits, key 2, XD: the 2 MiB pieces.
    const std::uint64_t large = 0x9000'0000'0000'1083 | software;
    CHECK(raw_at(mem, pt, gib1, 2) == (large | gib1));
    CHECK(raw_at(mem, pt, gib1 + 511 * mib2, 2) == (large | (gib1 + 511 * mib2)));
    // P R/W PAT(7) + software bits, key 2, XD: the 4 KiB pieces, the protected one included.
    const std::uint64_t small = 0x9000'0000'0000'0083 | software;
    CHECK(raw_at(mem, pt, gib1 + mib2, 1) == (small | (gib1 + mib2)));
    CHECK(raw_at(mem, pt, cut, 1) == (small | cut));
    CHECK(raw_at(mem, pt, gib1 + 2 * mib2 - kib4, 1) == (small | (gib1 + 2 * mib2 - kib4)));

    // A piece without the guest's bits cannot merge without losing or inventing them.
    require_ok(pt.unmap(range_of(cut, kib4)));
    require_ok(pt.map(range_of(cut, kib4), phys_addr{cut}, attrs, page_size::size_4k));
    CHECK(ok(pt.coalesce(range_of(gib1, gib1))).empty());
    *slot_at(mem, pt, cut, 1) |= software;
    CHECK(ok(pt.coalesce(range_of(gib1, gib1))) == flush::of(range_of(gib1, gib1)));
    CHECK(raw_at(mem, pt, gib1, 3) == original);
}

namespace {

// Page i's frame and attributes, as the stub's pages give them.
struct page_leaf {
    phys_addr frame;
    attributes attrs;
};
// Scattered frames, and every third page read-only and executable.
page_leaf scattered_leaf(std::uint64_t i) {
    return {phys_addr{0x70'0000 + 0x3000 * i},
            i % 3 == 2 ? attributes{.executable = true} : attributes{.writable = true, .memory_type = 6}};
}
std::uint64_t scattered_frame(std::uint64_t i) { return scattered_leaf(i).frame.value(); }

}  // namespace

TEST_CASE("map_4k_pages maps page i to frame i, scattered, in one page table and across tables") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    const auto frame_of = [](std::uint64_t i) { return phys_addr{scattered_frame(i)}; };
    const auto inside = range_of(0x20'0000, 5 * kib4);
    const auto across = range_of(0x60'0000 - 2 * kib4, 5 * kib4);  // two page tables, the second new
    CHECK(ok(pt.map_4k_pages(inside, read_write, frame_of)).empty());
    CHECK(ok(pt.map_4k_pages(across, read_write, frame_of)).empty());
    for (const auto& r : {inside, across})
        for (std::uint64_t i = 0; i < 5; ++i) {
            const auto va = r.start().value() + i * kib4;
            CHECK(raw_at(mem, pt, va, 1) == x86_64::make_leaf(1, frame_of(i), read_write).raw());
        }
    // All or nothing: one page already mapped refuses the whole run.
    const auto before = mappings_in(pt);
    const auto free_before = mem.frames().free_count();
    auto refused = pt.map_4k_pages(range_of(0x60'0000 - 3 * kib4, 2 * kib4), read_write, frame_of);
    CHECK((!refused && refused.error_code() == error::overlaps));
    CHECK(mappings_in(pt) == before);
    CHECK(mem.frames().free_count() == free_before);
}

TEST_CASE("move_4k_pages within one page table writes the leaves, clears the source, flushes it and takes no frame") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    memory mem;
    auto pt = make_space(mem, mode);
    const auto from = range_of(upper_half(mode) + 0x20'0000, 4 * kib4);
    const auto to = range_of(upper_half(mode) + 0x21'0000, 4 * kib4);
    require_ok(pt.map_4k_pages(from, read_write, [](std::uint64_t i) { return phys_addr{0x1000 * (i + 1)}; }));
    const auto free_before = mem.frames().free_count();
    const flush f = ok(pt.move_4k_pages(from, to, scattered_leaf));
    CHECK(f.range() == from);
    CHECK(mem.frames().free_count() == free_before);
    CHECK(gaps_in(pt, from) == std::vector<virt_range>{from});
    for (std::uint64_t i = 0; i < 4; ++i) {
        const auto leaf = scattered_leaf(i);
        CHECK(raw_at(mem, pt, to.start().value() + i * kib4, 1) == x86_64::make_leaf(1, leaf.frame, leaf.attrs).raw());
    }
}

TEST_CASE("move_4k_pages between page tables takes the tables the target needs and gives back those it empties") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    const auto start = mem.frames().free_count();
    const auto a = range_of(0x20'0000, 3 * kib4);            // PDPT, PD, PT
    const auto b = range_of(0x60'0000, 3 * kib4);            // another PT under the same PD
    const auto c = range_of(0x80'0000'0000 + kib4, 3 * kib4);  // another PDPT, PD, PT
    const auto d = range_of(0x5f'f000, 3 * kib4);            // across two page tables
    const auto keeper = range_of(0x7f'f000, kib4);           // in b's page table
    require_ok(pt.map_4k_pages(a, read_write, [](std::uint64_t i) { return phys_addr{0x1000 * (i + 1)}; }));
    require_ok(pt.map(keeper, phys_addr{0x9000}, read_only, page_size::size_4k));
    CHECK(start - mem.frames().free_count() == 4);
    CHECK(ok(pt.move_4k_pages(a, b, scattered_leaf)).range() == a);  // both tables there: one look each
    CHECK(start - mem.frames().free_count() == 3);  // a's PT went back
    CHECK(ok(pt.move_4k_pages(b, c, scattered_leaf)).range() == b);
    CHECK(start - mem.frames().free_count() == 6);  // c's PDPT, PD, PT came; b's PT holds the keeper
    require_ok(pt.unmap(keeper));
    CHECK(start - mem.frames().free_count() == 3);  // b's PT, PD and PDPT went back
    CHECK(ok(pt.move_4k_pages(c, d, scattered_leaf)).range() == c);
    CHECK(start - mem.frames().free_count() == 4);  // c's three went back; a PDPT, a PD, two PTs came
    CHECK(mappings_in(pt).size() == 3);
    for (std::uint64_t i = 0; i < 3; ++i) {
        const auto t = pt.translate(d.start() + i * kib4);
        REQUIRE(t.has_value());
        CHECK(t->phys == scattered_leaf(i).frame);
        CHECK(t->page.attrs.writable == scattered_leaf(i).attrs.writable);
    }
}

TEST_CASE("move_4k_pages out of part of a 2 MiB page splits it and flushes the whole large page") {
    memory mem;
    auto pt = make_space(mem, paging_mode::four_level);
    require_ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0x8000'0000}, read_write, page_size::size_2m));
    const auto from = range_of(0x4000'1000, 2 * kib4);
    const auto to = range_of(0x4060'0000, 2 * kib4);
    const flush f = ok(pt.move_4k_pages(from, to, scattered_leaf));
    CHECK(f.range() == range_of(0x4000'0000, mib2));
    CHECK(gaps_in(pt, range_of(0x4000'0000, mib2)) == std::vector<virt_range>{from});
    const auto kept = pt.translate(virt_addr{0x4000'3000});
    REQUIRE(kept.has_value());
    CHECK(kept->phys == phys_addr{0x8000'3000});
    CHECK(kept->page.size == page_size::size_4k);
}

// A move is a map of the target's pages and an unmap of the source, done at
// once: from random layouts, the same tables, frames and errors as those
// calls give in a twin space.
TEST_CASE("move_4k_pages ends as mapping its pages one by one and then unmapping the source would, over random layouts, or fails as they would and changes nothing") {
    const auto seed = test::test_seed();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    std::mt19937_64 rng{seed};
    const auto below = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>{0, n - 1}(rng); };
    memory mem_moved, mem_twin;
    auto moved = make_space(mem_moved, paging_mode::four_level);
    auto twin = make_space(mem_twin, paging_mode::four_level);
    const std::uint64_t base = gib1 - 4 * mib2;  // eight page tables across a 1 GiB boundary
    const auto random_range = [&](std::uint64_t pages) { return range_of(base + below(8 * 512 - pages) * kib4, pages * kib4); };
    int moves = 0, refusals = 0;
    for (int op = 0; op < 3000; ++op) {
        if (below(3) == 0) {  // the layout changes alike in both
            const auto r = random_range(1 + below(40));
            const bool large = below(4) == 0;
            const auto big = range_of(base + below(8) * mib2, mib2);
            const auto do_it = [&](space& s) {
                if (below(2) == 0) return s.unmap(r);
                return large ? s.map(big, phys_addr{0x4000'0000}, read_write, page_size::size_2m)
                             : s.map(r, phys_addr{0x10'0000}, read_only, page_size::size_4k);
            };
            const auto state = rng;
            const auto a = do_it(moved);
            rng = state;
            const auto b = do_it(twin);
            REQUIRE(a.has_value() == b.has_value());
            continue;
        }
        // Half the sources start at a mapping and half the targets lie in a
        // free range, so that moves succeed as well as fail.
        const std::uint64_t pages = 1 + below(below(4) == 0 ? 600 : 16);
        const auto window = range_of(base, 8 * mib2);
        auto from = random_range(pages);
        auto to = random_range(pages);
        if (const auto present = mappings_in(moved, window); !present.empty() && below(2) == 0) {
            const auto start = present[below(present.size())].start.value();
            if (start + pages * kib4 <= window.end().value()) from = range_of(start, pages * kib4);
        }
        std::vector<virt_range> roomy;
        for (const auto& g : gaps_in(moved, window))
            if (g.size() >= pages * kib4) roomy.push_back(g);
        if (!roomy.empty() && below(2) == 0) {
            const auto& g = roomy[below(roomy.size())];
            to = range_of(g.start().value() + below((g.size() - pages * kib4) / kib4 + 1) * kib4, pages * kib4);
        }
        INFO("move " << op << ": " << pages << " pages from " << std::hex << from.start().value() << " to "
                     << to.start().value());
        const auto before = mappings_in(moved);
        const auto free_before = mem_moved.frames().free_count();
        const auto m = moved.move_4k_pages(from, to, scattered_leaf);
        // The twin: refusals in the move's order (overlaps before not_mapped),
        // else the pages mapped one by one and the source unmapped.
        std::optional<error> refusal;
        virt_range unmapped{};
        if (from.overlaps(to) || !mappings_in(twin, to).empty()) {
            refusal = error::overlaps;
        } else if (!gaps_in(twin, from).empty()) {
            refusal = error::not_mapped;
        } else {
            for (std::uint64_t i = 0; i < pages; ++i)
                require_ok(twin.map(range_of(to.start().value() + i * kib4, kib4), scattered_leaf(i).frame,
                                    scattered_leaf(i).attrs, page_size::size_4k));
            unmapped = ok(twin.unmap(from)).range();
        }
        REQUIRE(m.has_value() == !refusal.has_value());
        if (!m) {
            ++refusals;
            CHECK(m.error_code() == *refusal);
            CHECK(mappings_in(moved) == before);
            CHECK(mem_moved.frames().free_count() == free_before);
            continue;
        }
        ++moves;
        CHECK(m->range() == unmapped);
        REQUIRE(mappings_in(moved) == mappings_in(twin));
        CHECK(mem_moved.frames().free_count() == mem_twin.frames().free_count());
    }
    CHECK(moves > 100);
    CHECK(refusals > 100);
}
