// The reference backend on its own: the page-table contract (errors that
// change nothing, splits that keep attributes, coalescing, flushes, gaps,
// accessed/dirty harvest) checked directly, so that the differential test
// compares the x86-64 backend against a model that is itself right.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "asreloc/reference/page_table.hpp"

using namespace asreloc;

namespace {

constexpr std::uint64_t kib4 = 0x1000;
constexpr std::uint64_t mib2 = 0x20'0000;
constexpr std::uint64_t gib1 = 0x4000'0000;

virt_range range_of(std::uint64_t start, std::uint64_t size) { return virt_range::of(virt_addr{start}, size); }
virt_range bounds(std::uint64_t first, std::uint64_t last) {
    return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
}

std::vector<mapping> mappings_in(const reference::page_table& pt, virt_range window = virt_range::everything(),
                                 walk_order order = walk_order::bottom_up) {
    std::vector<mapping> out;
    REQUIRE(pt.for_each_mapping(window, order, [&](const mapping& m) {
                  out.push_back(m);
                  return walk_control::proceed;
              }).has_value());
    return out;
}
std::vector<virt_range> gaps_in(const reference::page_table& pt, virt_range window = virt_range::everything(),
                                walk_order order = walk_order::bottom_up) {
    std::vector<virt_range> out;
    REQUIRE(pt.for_each_gap(window, order, [&](const virt_range& g) {
                  out.push_back(g);
                  return walk_control::proceed;
              }).has_value());
    return out;
}
template <class T>
std::string describe(const result<T>& r) {
    return r ? std::string{"ok"} : std::string{to_string(r.error_code())};
}
flush ok(const result<flush>& r) {
    REQUIRE(describe(r) == "ok");
    return *r;
}

// 4 KiB pages, a 2 MiB page, a 1 GiB page and an upper-half page, some accessed.
reference::page_table populated(unsigned width) {
    reference::page_table pt{width};
    const std::uint64_t upper = std::uint64_t{0} - (std::uint64_t{1} << (width - 1));
    (void)ok(pt.map(range_of(0x10'0000, 3 * kib4), phys_addr{0x10'0000}, read_write, page_size::size_4k));
    (void)ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0x8000'0000}, attributes{.memory_type = 4},
                    page_size::size_2m));
    (void)ok(pt.map(range_of(0x80'0000'0000, gib1), phys_addr{0x40'0000'0000}, user_read_write, page_size::size_1g));
    (void)ok(pt.map(range_of(upper + kib4, kib4), phys_addr{0x7000}, read_only, page_size::size_4k));
    REQUIRE(pt.mark_accessed(virt_addr{0x10'1000}, true).has_value());
    return pt;
}

template <class Op>
void expect_refused(reference::page_table& pt, error expected, Op&& op) {
    const auto before = mappings_in(pt);
    const auto r = op(pt);
    CHECK(describe(r) == to_string(expected));
    CHECK(mappings_in(pt) == before);
}

}  // namespace

TEST_CASE("the reference maps, translates and unmaps pages of every size in both halves") {
    const unsigned width = GENERATE(48u, 57u);
    CAPTURE(width);
    auto pt = populated(width);
    const auto t = pt.translate(virt_addr{0x80'1234'5678});
    REQUIRE(t.has_value());
    CHECK(t->phys == phys_addr{0x40'1234'5678});
    CHECK(t->page.size == page_size::size_1g);
    CHECK(t->page.attrs == user_read_write);
    CHECK(pt.translate(virt_addr{0x4000'0000})->page.size == page_size::size_2m);
    CHECK(pt.translate(virt_addr{0x10'1abc})->page.dirty);
    CHECK(mappings_in(pt).size() == 6);
    CHECK(ok(pt.unmap(range_of(0x80'0000'0000, gib1))) == flush::of(range_of(0x80'0000'0000, gib1)));
    CHECK(failed_with(pt.translate(virt_addr{0x80'0000'0000}), error::not_mapped));
    CHECK(pt.leaf_count() == 5);
}

TEST_CASE("the reference refuses every kind of bad input with the precise error and changes nothing") {
    const unsigned width = GENERATE(48u, 57u);
    CAPTURE(width);
    auto pt = populated(width);
    const std::uint64_t hole = std::uint64_t{1} << (width - 1);
    const auto map = [](virt_range r, std::uint64_t phys, page_size size, attributes a = read_write) {
        return [=](reference::page_table& p) { return p.map(r, phys_addr{phys}, a, size); };
    };

    expect_refused(pt, error::misaligned, map(range_of(0x20'0800, kib4), 0, page_size::size_4k));
    expect_refused(pt, error::misaligned, map(range_of(0x60'0000, mib2), kib4, page_size::size_2m));
    expect_refused(pt, error::misaligned, map(range_of(8 * gib1, mib2), 0, page_size::size_1g));
    expect_refused(pt, error::misaligned, [](auto& p) { return p.unmap(range_of(0x10'0800, kib4)); });
    expect_refused(pt, error::misaligned, [](auto& p) { return p.protect(range_of(0x10'0000, 0x800), read_only); });

    expect_refused(pt, error::non_canonical, map(range_of(hole, kib4), 0, page_size::size_4k));
    expect_refused(pt, error::non_canonical, map(bounds(hole - kib4, ~std::uint64_t{0}), 0, page_size::size_4k));
    expect_refused(pt, error::non_canonical, [&](auto& p) { return p.unmap(range_of(hole - kib4, 2 * kib4)); });
    expect_refused(pt, error::non_canonical, [&](auto& p) { return p.translate(virt_addr{hole + 5}); });

    expect_refused(pt, error::overlaps, map(range_of(0x10'2000, 2 * kib4), 0, page_size::size_4k));
    expect_refused(pt, error::overlaps, map(range_of(0x4010'0000, kib4), 0, page_size::size_4k));
    expect_refused(pt, error::overlaps, map(range_of(0, mib2), 0, page_size::size_2m));
    expect_refused(pt, error::overlaps, map(range_of(0x80'0000'0000, mib2), 0, page_size::size_2m));

    expect_refused(pt, error::not_mapped, [](auto& p) { return p.unmap(bounds(0x401f'f000, 0x4020'0fff)); });
    expect_refused(pt, error::not_mapped, [](auto& p) { return p.protect(bounds(0x3fff'f000, 0x4000'0fff), read_only); });
    expect_refused(pt, error::not_mapped, [](auto& p) { return p.translate(virt_addr{0x10'3000}); });
    expect_refused(pt, error::not_mapped, [](auto& p) { return p.mark_accessed(virt_addr{0x10'3000}, true); });

    expect_refused(pt, error::unsupported_page_size,
                   map(range_of(0x200'0000'0000, 0x40'0000), 0, static_cast<page_size>(0x40'0000)));
    expect_refused(pt, error::invalid_attributes,
                   map(range_of(0x200'0000'0000, kib4), 0, page_size::size_4k, attributes{.memory_type = 8}));
    expect_refused(pt, error::invalid_attributes,
                   [](auto& p) { return p.protect(range_of(0x4000'1000, kib4), attributes{.protection_key = 16}); });
    expect_refused(pt, error::out_of_bounds, map(range_of(0x200'0000'0000, 2 * kib4), 0x000f'ffff'ffff'f000,
                                                 page_size::size_4k));
    CHECK(failed_with(virt_range::make(virt_addr{0x1000}, 0), error::empty_range));
}

TEST_CASE("the reference splits a large page cut by unmap or protect and keeps its attributes and A/D") {
    auto pt = populated(48);
    REQUIRE(pt.mark_accessed(virt_addr{0x4000'0000}, true).has_value());
    CHECK(ok(pt.unmap(range_of(0x4000'5000, kib4))) == flush::of(range_of(0x4000'0000, mib2)));
    const auto pieces = mappings_in(pt, range_of(0x4000'0000, mib2));
    REQUIRE(pieces.size() == 511);
    for (const auto& m : pieces) {
        CHECK(m.size == page_size::size_4k);
        CHECK(m.attrs == attributes{.memory_type = 4});
        CHECK(m.phys == phys_addr{0x8000'0000 + (m.start.value() - 0x4000'0000)});
        CHECK(m.accessed);
        CHECK(m.dirty);
    }

    const auto middle = bounds(0x80'0020'1000, 0x80'0060'2fff);
    CHECK(ok(pt.protect(middle, read_only)) == flush::of(range_of(0x80'0000'0000, gib1)));
    for (const auto& m : mappings_in(pt, range_of(0x80'0000'0000, gib1))) {
        CHECK(m.phys == phys_addr{0x40'0000'0000 + (m.start.value() - 0x80'0000'0000)});
        CHECK((middle.contains(m.range()) || !middle.overlaps(m.range())));
        CHECK(m.attrs == (middle.contains(m.range()) ? read_only : user_read_write));
    }
    CHECK(pt.translate(virt_addr{0x80'0040'0000})->page.size == page_size::size_2m);
    CHECK(pt.translate(virt_addr{0x80'0020'1000})->page.size == page_size::size_4k);
}

TEST_CASE("the reference coalesces 512 matching pieces back into one page, up to 1 GiB") {
    reference::page_table pt{48};
    const attributes a{.writable = true, .memory_type = 6};
    (void)ok(pt.map(range_of(gib1, gib1), phys_addr{2 * gib1}, a, page_size::size_2m));
    (void)ok(pt.unmap(range_of(gib1 + 3 * kib4, kib4)));
    (void)ok(pt.map(range_of(gib1 + 3 * kib4, kib4), phys_addr{2 * gib1 + 3 * kib4}, a, page_size::size_4k));
    CHECK(ok(pt.coalesce(range_of(gib1 + mib2, gib1 - mib2))).empty());  // holds neither the split piece nor 1 GiB
    CHECK(ok(pt.coalesce(range_of(0, 4 * gib1))) == flush::of(range_of(gib1, gib1)));
    const auto m = mappings_in(pt);
    REQUIRE(m.size() == 1);
    CHECK(m[0] == mapping{virt_addr{gib1}, phys_addr{2 * gib1}, page_size::size_1g, a, false, false});
}

TEST_CASE("the reference walks maximal gaps in both orders, clipped to the window and the canonical halves") {
    reference::page_table pt{48};
    (void)ok(pt.map(range_of(0x1000, 2 * kib4), phys_addr{0}, read_write, page_size::size_4k));
    (void)ok(pt.map(range_of(0x4000'0000, mib2), phys_addr{0}, read_write, page_size::size_2m));
    (void)ok(pt.map(range_of(0xffff'8000'0000'0000, kib4), phys_addr{0}, read_write, page_size::size_4k));
    const std::vector<virt_range> all = {bounds(0, 0xfff), bounds(0x3000, 0x3fff'ffff),
                                         bounds(0x4020'0000, 0x7fff'ffff'ffff),
                                         bounds(0xffff'8000'0000'1000, ~std::uint64_t{0})};
    CHECK(gaps_in(pt) == all);
    CHECK(gaps_in(pt, virt_range::everything(), walk_order::top_down) ==
          std::vector<virt_range>(all.rbegin(), all.rend()));
    CHECK(gaps_in(pt, bounds(0x3fff'0000, 0x4040'ffff)) ==
          std::vector<virt_range>{bounds(0x3fff'0000, 0x3fff'ffff), bounds(0x4020'0000, 0x4040'ffff)});
    CHECK(gaps_in(pt, bounds(0x8000'0000'0000, 0xffff'7fff'ffff'ffff)).empty());
    CHECK(gaps_in(pt, bounds(0x4010'0000, 0x4010'0fff)).empty());
    CHECK(mappings_in(pt, bounds(0x4010'0000, 0x4010'0fff)).at(0).range() == range_of(0x4000'0000, mib2));
    int seen = 0;
    CHECK(*pt.for_each_gap(virt_range::everything(), walk_order::top_down, [&](const virt_range&) {
        ++seen;
        return walk_control::stop;
    }) == walk_control::stop);
    CHECK(seen == 1);
}

TEST_CASE("the reference counts accessed and dirty 4 KiB pages and clears only the bits asked") {
    auto pt = populated(48);
    REQUIRE(pt.mark_accessed(virt_addr{0x4000'0000}, false).has_value());
    auto q = pt.query_and_clear(range_of(0x10'0000, 4 * kib4), ad_bits::dirty);
    CHECK(q->accessed_pages == 1);
    CHECK(q->dirty_pages == 1);
    CHECK(q->invalidate == flush::of(range_of(0x10'0000, 4 * kib4)));
    auto again = pt.query_and_clear(range_of(0x10'0000, 4 * kib4), ad_bits::none);
    CHECK(again->accessed_pages == 1);
    CHECK(again->dirty_pages == 0);
    CHECK(again->invalidate.empty());
    auto large = pt.query_and_clear(range_of(0x4000'0000, 5 * kib4), ad_bits::both);
    CHECK(large->accessed_pages == 5);
    CHECK(large->dirty_pages == 0);
    CHECK_FALSE(pt.translate(virt_addr{0x4010'0000})->page.accessed);  // the whole 2 MiB leaf
}
