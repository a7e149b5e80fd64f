// Bad input to the x86-64 backend: every error kind, each checked for the
// precise error and for a space left bit for bit as it was (every mapping,
// every table frame and its 512 raw entries) with the allocator's free count
// unchanged. Allocation failure is injected at every allocation point of maps
// and of splitting unmaps and protects.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "asreloc/x86_64/page_table.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;
using asreloc::x86_64::paging_mode;

namespace {

constexpr std::size_t frames = 512;
using memory = test::sim_memory<frames>;
using injector = test::failing_allocator<frame_pool<frames>>;
using space = x86_64::page_table<injector, memory>;

constexpr std::uint64_t kib4 = 0x1000;
constexpr std::uint64_t mib2 = 0x20'0000;
constexpr std::uint64_t gib1 = 0x4000'0000;

virt_range range_of(std::uint64_t start, std::uint64_t size) { return virt_range::of(virt_addr{start}, size); }
virt_range bounds(std::uint64_t first, std::uint64_t last) {
    return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
}
std::uint64_t upper_half(paging_mode m) {
    return m == paging_mode::four_level ? 0xffff'8000'0000'0000 : 0xff00'0000'0000'0000;
}

// Everything observable about a space and its allocator.
struct snapshot {
    std::vector<mapping> mappings;
    std::vector<std::pair<unsigned, std::uint64_t>> tables;  // level, frame
    std::vector<std::uint64_t> entries;                      // 512 raw entries per table, in table order
    std::size_t free_frames = 0;

    bool operator==(const snapshot&) const = default;
};

template <class T>
std::string describe(const result<T>& r) {
    return r ? std::string{"ok"} : std::string{to_string(r.error_code())};
}

// A space with something in every kind of place: 4 KiB pages, a 2 MiB page, a
// 1 GiB page (512 2 MiB pages without 1 GiB support), the upper half, A and D bits set.
struct populated {
    memory mem;
    injector alloc{mem.frames()};
    space pt;

    explicit populated(paging_mode mode, x86_64::features f = {}) : pt(create(alloc, mem, mode, f)) {
        const auto upper = upper_half(mode);
        require(pt.map(range_of(0x10'0000, 3 * kib4), phys_addr{0x10'0000}, read_write, page_size::size_4k));
        require(pt.map(range_of(0x4000'0000, mib2), phys_addr{0x8000'0000},
                       attributes{.writable = true, .memory_type = 4, .protection_key = 7}, page_size::size_2m));
        require(pt.map(range_of(0x80'0000'0000, gib1), phys_addr{0x40'0000'0000},
                       attributes{.user = true, .executable = true, .global = true, .memory_type = 5},
                       f.pages_1g ? page_size::size_1g : page_size::size_2m));
        require(pt.map(range_of(upper + kib4, kib4), phys_addr{0x7000}, user_read_write, page_size::size_4k));
        REQUIRE(pt.mark_accessed(virt_addr{0x10'1000}, true).has_value());
        REQUIRE(pt.mark_accessed(virt_addr{0x4000'1000}, false).has_value());
    }

    snapshot dump() const {
        snapshot s;
        const auto walked = pt.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [&](const mapping& m) {
            s.mappings.push_back(m);
            return walk_control::proceed;
        });
        REQUIRE(walked.has_value());
        pt.for_each_table([&](unsigned level, phys_addr table) {
            s.tables.emplace_back(level, table.value());
            const auto* raw = reinterpret_cast<const std::uint64_t*>(mem.to_virt(table));
            s.entries.insert(s.entries.end(), raw, raw + 512);
        });
        s.free_frames = mem.frames().free_count();
        return s;
    }

    // Runs `op` and checks that it failed with exactly `expected` and changed nothing.
    template <class Op>
    void expect_refused(error expected, Op&& op) {
        const auto before = dump();
        const auto r = op(pt);
        CHECK(describe(r) == to_string(expected));
        CHECK(dump() == before);
    }

private:
    static space create(injector& alloc, memory& mem, paging_mode mode, x86_64::features f) {
        auto made = space::create(alloc, mem, mode, f);
        REQUIRE(made.has_value());
        return std::move(*made);
    }
    static void require(const result<flush>& r) { REQUIRE(describe(r) == "ok"); }
};

// Fails the 1st, 2nd, ... allocation of `op` until it succeeds; each failure
// must be out_of_frames and leave everything as it was. Answers how many
// allocations the successful run made.
template <class Op>
long inject_at_every_allocation(populated& s, Op&& op) {
    for (long n = 0; n < 64; ++n) {
        INFO("allocation " << n << " fails");
        const auto before = s.dump();
        s.alloc.fail_at(n);
        const auto r = op(s.pt);
        if (r) {
            s.alloc.never_fail();
            CHECK(s.alloc.calls() == n);  // the run made fewer calls than the one that would fail
            return n;
        }
        CHECK(describe(r) == "out_of_frames");
        CHECK(s.dump() == before);
    }
    FAIL("the operation never succeeded");
    return -1;
}

}  // namespace

TEST_CASE("misaligned ranges, frames and windows are refused with misaligned and change nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const auto map = [](virt_range r, std::uint64_t phys, page_size size) {
        return [=](space& pt) { return pt.map(r, phys_addr{phys}, read_write, size); };
    };
    s.expect_refused(error::misaligned, map(range_of(0x20'0800, kib4), 0x1000, page_size::size_4k));
    s.expect_refused(error::misaligned, map(range_of(0x20'0000, kib4 + 0x800), 0x1000, page_size::size_4k));
    s.expect_refused(error::misaligned, map(range_of(0x20'0000, kib4), 0x1010, page_size::size_4k));
    s.expect_refused(error::misaligned, map(range_of(0x60'1000, mib2), 0x20'0000, page_size::size_2m));
    s.expect_refused(error::misaligned, map(range_of(0x60'0000, mib2 + kib4), 0x20'0000, page_size::size_2m));
    s.expect_refused(error::misaligned, map(range_of(0x60'0000, mib2), 0x20'1000, page_size::size_2m));
    s.expect_refused(error::misaligned, map(range_of(gib1 * 8, mib2), 0, page_size::size_1g));
    s.expect_refused(error::misaligned, map(range_of(gib1 * 8 + mib2, gib1), 0, page_size::size_1g));
    s.expect_refused(error::misaligned, map(range_of(gib1 * 8, gib1), mib2, page_size::size_1g));

    const auto cut = range_of(0x10'0800, kib4);
    s.expect_refused(error::misaligned, [&](space& pt) { return pt.unmap(cut); });
    s.expect_refused(error::misaligned, [&](space& pt) { return pt.unmap(range_of(0x4000'0000, 0x1800)); });
    s.expect_refused(error::misaligned, [&](space& pt) { return pt.protect(cut, read_only); });
    s.expect_refused(error::misaligned, [&](space& pt) { return pt.query_and_clear(cut, ad_bits::both); });
    s.expect_refused(error::misaligned, [&](space& pt) { return pt.coalesce(cut); });

    bool visited = false;
    s.expect_refused(error::misaligned, [&](space& pt) {
        return pt.for_each_mapping(cut, walk_order::bottom_up, [&](const mapping&) {
            visited = true;
            return walk_control::proceed;
        });
    });
    s.expect_refused(error::misaligned, [&](space& pt) {
        return pt.for_each_gap(cut, walk_order::top_down, [&](const virt_range&) {
            visited = true;
            return walk_control::proceed;
        });
    });
    CHECK_FALSE(visited);
}

TEST_CASE("addresses outside the canonical halves are refused with non_canonical and change nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const bool four = mode == paging_mode::four_level;
    const std::uint64_t lower_end = four ? 0x0000'8000'0000'0000 : 0x0100'0000'0000'0000;
    const auto upper = upper_half(mode);

    const virt_range bad[] = {
        range_of(lower_end, kib4),                          // just above the lower half
        range_of(lower_end - kib4, 2 * kib4),               // straddles its end
        range_of(upper - kib4, 2 * kib4),                   // straddles the start of the upper half
        bounds(lower_end - kib4, upper + kib4 - 1),         // both ends canonical, the hole between
        range_of(0x8000'0000'0000'0000, kib4),              // the middle of the hole
    };
    for (const auto& r : bad) {
        INFO("range " << std::hex << r.start().value() << " to " << r.last().value());
        s.expect_refused(error::non_canonical,
                         [&](space& pt) { return pt.map(r, phys_addr{0x1000}, read_write, page_size::size_4k); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.unmap(r); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.protect(r, read_only); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.query_and_clear(r, ad_bits::both); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.coalesce(r); });
    }
    for (const std::uint64_t va : {lower_end, lower_end + 0x123, upper - 1, std::uint64_t{0x8000'0000'0000'0000}}) {
        INFO("address " << std::hex << va);
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.translate(virt_addr{va}); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.mark_accessed(virt_addr{va}, true); });
    }
    if (four) {
        // Canonical with 5-level paging only; and an alias of the mapped upper-half
        // page (same table indices) that a walk without the check would find.
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.translate(virt_addr{0x0001'0000'0000'0000}); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.translate(virt_addr{0x0000'8000'0000'1000}); });
        s.expect_refused(error::non_canonical, [&](space& pt) { return pt.unmap(range_of(0x0000'8000'0000'1000, kib4)); });
        s.expect_refused(error::non_canonical,
                         [&](space& pt) { return pt.mark_accessed(virt_addr{0x0000'8000'0000'1000}, true); });
    }
}

TEST_CASE("a map onto anything already mapped is refused with overlaps and changes nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    struct attempt {
        virt_range range;
        page_size size;
    };
    const attempt attempts[] = {
        {range_of(0x10'0000, kib4), page_size::size_4k},              // the same 4 KiB page
        {range_of(0x10'2000, 2 * kib4), page_size::size_4k},          // its last page and one past
        {range_of(0x0f'f000, 2 * kib4), page_size::size_4k},          // one before and its first page
        {range_of(0x4010'0000, kib4), page_size::size_4k},            // inside the 2 MiB page
        {range_of(0, mib2), page_size::size_2m},                      // a 2 MiB page holding 4 KiB ones
        {range_of(0x3fe0'0000, 2 * mib2), page_size::size_2m},        // next to and onto the 2 MiB page
        {range_of(0x4000'0000, gib1), page_size::size_1g},            // a 1 GiB page holding it
        {range_of(0x80'0020'0000, mib2), page_size::size_2m},         // inside the 1 GiB page
        {range_of(0x80'3fff'f000, 2 * kib4), page_size::size_4k},     // its last page and one past
        {range_of(upper_half(mode), mib2), page_size::size_2m},       // the upper-half page
    };
    for (const auto& a : attempts) {
        INFO("range " << std::hex << a.range.start().value() << "+" << a.range.size());
        s.expect_refused(error::overlaps, [&](space& pt) {
            return pt.map(a.range, phys_addr{0x20'0000'0000}, read_write, a.size);
        });
    }
}

TEST_CASE("unmap, protect and translate of what is not mapped answer not_mapped and split nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const virt_range partly[] = {
        range_of(0x20'0000, kib4),                    // nothing there
        range_of(0x10'2000, 2 * kib4),                // last page mapped, next not
        bounds(0x3fff'f000, 0x4000'0fff),             // a gap, then a cut into the 2 MiB page
        bounds(0x401f'f000, 0x4020'0fff),             // a cut into the 2 MiB page, then a gap
        bounds(0x80'3fff'f000, 0x80'4000'0fff),       // a cut into the 1 GiB page, then a gap
        range_of(0x10'0000, gib1),                    // holes between everything
    };
    for (const auto& r : partly) {
        INFO("range " << std::hex << r.start().value() << " to " << r.last().value());
        s.expect_refused(error::not_mapped, [&](space& pt) { return pt.unmap(r); });
        s.expect_refused(error::not_mapped, [&](space& pt) { return pt.protect(r, read_only); });
    }
    s.expect_refused(error::not_mapped, [&](space& pt) { return pt.translate(virt_addr{0x10'3000}); });
    s.expect_refused(error::not_mapped, [&](space& pt) { return pt.translate(virt_addr{0x4020'0000}); });
    s.expect_refused(error::not_mapped, [&](space& pt) { return pt.mark_accessed(virt_addr{0x20'0000}, false); });
}

TEST_CASE("page sizes the backend cannot map are refused with unsupported_page_size and change nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    SECTION("sizes x86-64 paging does not have") {
        populated s{mode};
        for (const std::uint64_t size : {std::uint64_t{0x2000}, std::uint64_t{0x40'0000}, std::uint64_t{1} << 39}) {
            INFO("size " << std::hex << size);
            s.expect_refused(error::unsupported_page_size, [&](space& pt) {
                return pt.map(range_of(0x200'0000'0000, size), phys_addr{0}, read_write, static_cast<page_size>(size));
            });
        }
    }
    SECTION("1 GiB pages on a processor without them") {
        populated s{mode, x86_64::features{.pages_1g = false}};
        s.expect_refused(error::unsupported_page_size, [&](space& pt) {
            return pt.map(range_of(0x200'0000'0000, gib1), phys_addr{0}, read_write, page_size::size_1g);
        });
    }
}

TEST_CASE("attributes that cannot be encoded are refused with invalid_attributes and change nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    for (const auto& bad : {attributes{.memory_type = 8}, attributes{.protection_key = 16},
                            attributes{.writable = true, .memory_type = 255, .protection_key = 255}}) {
        s.expect_refused(error::invalid_attributes, [&](space& pt) {
            return pt.map(range_of(0x200'0000'0000, kib4), phys_addr{0}, bad, page_size::size_4k);
        });
        // A protect that would have to split the 1 GiB and 2 MiB pages first.
        s.expect_refused(error::invalid_attributes,
                         [&](space& pt) { return pt.protect(range_of(0x80'0000'1000, kib4), bad); });
        s.expect_refused(error::invalid_attributes,
                         [&](space& pt) { return pt.protect(range_of(0x4000'1000, kib4), bad); });
    }
}

TEST_CASE("frames past the 52-bit physical address space are refused with out_of_bounds and change nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    s.expect_refused(error::out_of_bounds, [&](space& pt) {
        return pt.map(range_of(0x200'0000'0000, 2 * kib4), phys_addr{0x000f'ffff'ffff'f000}, read_write,
                      page_size::size_4k);
    });
    s.expect_refused(error::out_of_bounds, [&](space& pt) {
        return pt.map(range_of(0x200'0000'0000, kib4), phys_addr{0x0010'0000'0000'0000}, read_write,
                      page_size::size_4k);
    });
    s.expect_refused(error::out_of_bounds, [&](space& pt) {
        return pt.map(range_of(0x200'0000'0000, 2 * gib1), phys_addr{0x000f'ffff'c000'0000}, read_write,
                      page_size::size_1g);
    });
    s.expect_refused(error::out_of_bounds, [&](space& pt) {  // wraps around 2^64
        return pt.map(range_of(0x200'0000'0000, 2 * kib4), phys_addr{0xffff'ffff'ffff'f000}, read_write,
                      page_size::size_4k);
    });
    // The last frame below 2^52 is fine.
    const auto fits = s.pt.map(range_of(0x200'0000'0000, kib4), phys_addr{0x000f'ffff'ffff'f000}, read_write,
                               page_size::size_4k);
    CHECK(describe(fits) == "ok");
}

TEST_CASE("an empty range cannot reach a backend: making one answers empty_range") {
    // Every range-taking call takes a virt_range, which is never empty; the
    // checked factory is where a caller's zero size is caught.
    const auto made = virt_range::make(virt_addr{0x1000}, 0);
    CHECK(failed_with(made, error::empty_range));
    CHECK(failed_with(virt_range::make(virt_addr{0xffff'ffff'ffff'f000}, 2 * kib4), error::non_canonical));
    CHECK(virt_range::make(virt_addr{0x1000}, kib4).has_value());
}

TEST_CASE("creating a space with no frame left answers out_of_frames and takes nothing") {
    memory mem;
    injector alloc{mem.frames()};
    alloc.fail_at(0);
    const auto free_before = mem.frames().free_count();
    const auto made = space::create(alloc, mem, paging_mode::four_level);
    CHECK(failed_with(made, error::out_of_frames));
    CHECK(mem.frames().free_count() == free_before);
}

TEST_CASE("out_of_frames at every allocation of a map leaves the space and the allocator as they were") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    const bool four = mode == paging_mode::four_level;
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const auto map = [](virt_range r, page_size size) {
        return [=](space& pt) { return pt.map(r, phys_addr{0x20'0000'0000}, read_write, size); };
    };
    // A 4 KiB page in a new top-level entry needs a table at every level below the root.
    const auto fresh = four ? 0x100'0000'0000 : 0x0002'0000'0000'0000;
    const auto before = s.mem.frames().free_count();
    CHECK(inject_at_every_allocation(s, map(range_of(fresh, kib4), page_size::size_4k)) == (four ? 3 : 4));
    CHECK(before - s.mem.frames().free_count() == (four ? 3u : 4u));
    // 4 KiB pages across a 1 GiB boundary in a new top-level entry: two PDs and two PTs more.
    const auto across = four ? 0x180'0000'0000 : 0x0003'0000'0000'0000;
    CHECK(inject_at_every_allocation(s, map(range_of(across + gib1 - kib4, 2 * kib4), page_size::size_4k)) ==
          (four ? 5 : 6));
    // 2 MiB and 1 GiB pages stop one and two levels higher.
    CHECK(inject_at_every_allocation(s, map(range_of(fresh + gib1, mib2), page_size::size_2m)) == 1);
    CHECK(inject_at_every_allocation(s, map(range_of(upper_half(mode) + 8 * gib1, gib1), page_size::size_1g)) == 0);
    CHECK(inject_at_every_allocation(s, map(range_of(0x4040'0000, mib2), page_size::size_2m)) == 0);
    CHECK(inject_at_every_allocation(s, map(range_of(0x10'3000, kib4), page_size::size_4k)) == 0);
    // Filling a 4 KiB gap under a fresh PDPT entry of an existing PDPT: PD and PT.
    CHECK(inject_at_every_allocation(s, map(range_of(0x1'0000'0000, kib4), page_size::size_4k)) == 2);
}

TEST_CASE("out_of_frames at every allocation of a splitting unmap or protect leaves everything as it was") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    const bool use_unmap = GENERATE(true, false);
    INFO((use_unmap ? "unmap" : "protect"));
    populated s{mode};
    const auto change = [&](virt_range r) {
        return [=](space& pt) { return use_unmap ? pt.unmap(r) : pt.protect(r, read_only); };
    };
    REQUIRE(s.pt.map(range_of(0x100'4000'0000, 2 * gib1), phys_addr{0x40'0000'0000}, read_write, page_size::size_1g)
                .has_value());
    // Inside one 2 MiB page: one table.
    CHECK(inject_at_every_allocation(s, change(range_of(0x4000'3000, kib4))) == 1);
    // Inside one 1 GiB page, cutting two different 2 MiB pieces: a PD and two PTs.
    CHECK(inject_at_every_allocation(s, change(bounds(0x80'0020'1000, 0x80'0060'2fff))) == 3);
    // Across two 1 GiB pages, cutting both at 4 KiB: two PDs and two PTs.
    CHECK(inject_at_every_allocation(s, change(bounds(0x100'7fff'f000, 0x100'8000'0fff))) == 4);
    // Whole pages need no table.
    CHECK(inject_at_every_allocation(s, change(range_of(0x10'0000, 3 * kib4))) == 0);
}

namespace {

struct page_leaf {
    phys_addr frame;
    attributes attrs;
};
// move_4k_pages of `from` to `to`, page i to frame `frame + i * 4 KiB`.
auto move(virt_range from, virt_range to, std::uint64_t frame = 0x30'0000, attributes attrs = read_write) {
    return [=](space& pt) {
        return pt.move_4k_pages(from, to, [&](std::uint64_t i) { return page_leaf{phys_addr{frame + i * kib4}, attrs}; });
    };
}

}  // namespace

TEST_CASE("move_4k_pages refuses bad input with the precise error and changes nothing") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const bool four = mode == paging_mode::four_level;
    const auto stub = range_of(0x10'0000, 3 * kib4);  // three mapped 4 KiB pages
    const auto free_here = range_of(0x18'0000, 3 * kib4);   // free, in the same page table
    const auto free_there = range_of(0x30'0000, 3 * kib4);  // free, no page table yet
    for (const auto& to : {free_here, free_there}) {
        INFO("to " << std::hex << to.start().value());
        s.expect_refused(error::out_of_bounds, move(stub, range_of(to.start().value(), 2 * kib4)));
        s.expect_refused(error::misaligned, move(range_of(0x10'0800, 3 * kib4), to));
        s.expect_refused(error::misaligned, move(stub, range_of(to.start().value() + 0x800, 3 * kib4)));
        s.expect_refused(error::misaligned, move(stub, to, 0x30'0010));
        s.expect_refused(error::out_of_bounds, move(stub, to, 0x000f'ffff'ffff'e000));
        s.expect_refused(error::invalid_attributes, move(stub, to, 0x30'0000, attributes{.memory_type = 8}));
        s.expect_refused(error::invalid_attributes, move(stub, to, 0x30'0000, attributes{.protection_key = 16}));
        // A hole in the source: the 4th page, or nothing at all there.
        s.expect_refused(error::not_mapped, move(range_of(0x10'0000, 4 * kib4), range_of(to.start().value(), 4 * kib4)));
        s.expect_refused(error::not_mapped, move(range_of(0x50'0000, 3 * kib4), to));
    }
    s.expect_refused(error::overlaps, move(stub, range_of(0x10'2000, 3 * kib4)));     // the ranges overlap
    s.expect_refused(error::overlaps, move(stub, range_of(0x4000'0000, 3 * kib4)));   // inside a 2 MiB page
    s.expect_refused(error::overlaps, move(stub, range_of(upper_half(mode), 3 * kib4)));  // a 4 KiB page there
    // A mapped target is refused before a hole in the source is looked for.
    s.expect_refused(error::overlaps, move(range_of(0x50'0000, 3 * kib4), range_of(upper_half(mode), 3 * kib4)));
    const std::uint64_t lower_end = four ? 0x0000'8000'0000'0000 : 0x0100'0000'0000'0000;
    s.expect_refused(error::non_canonical, move(stub, range_of(lower_end, 3 * kib4)));
    s.expect_refused(error::non_canonical, move(range_of(lower_end - kib4, 3 * kib4), free_there));
}

TEST_CASE("move_4k_pages refuses a run with one bad page anywhere in it, with the first bad page's error") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    const auto stub = range_of(0x10'0000, 3 * kib4);
    const auto to = range_of(0x18'0000, 3 * kib4);  // free, in the same page table: the fast path
    // Page `bad` gets `leaf`, the others good leaves; a second bad page after
    // it (when there is room) must not change the answer.
    const auto with_bad_page = [&](std::uint64_t bad, page_leaf leaf, page_leaf later) {
        return [=](space& pt) {
            return pt.move_4k_pages(stub, to, [&](std::uint64_t i) {
                if (i == bad) return leaf;
                if (i > bad) return later;
                return page_leaf{phys_addr{0x30'0000 + i * kib4}, read_write};
            });
        };
    };
    const page_leaf good{phys_addr{0x40'0000}, read_write};
    const page_leaf unaligned{phys_addr{0x30'0010}, read_write};
    const page_leaf too_high{phys_addr{0x0010'0000'0000'0000}, read_write};
    const page_leaf bad_type{phys_addr{0x30'0000}, attributes{.memory_type = 8}};
    for (std::uint64_t bad = 0; bad < 3; ++bad) {
        INFO("bad page " << bad);
        s.expect_refused(error::misaligned, with_bad_page(bad, unaligned, good));
        s.expect_refused(error::out_of_bounds, with_bad_page(bad, too_high, good));
        s.expect_refused(error::invalid_attributes, with_bad_page(bad, bad_type, good));
        s.expect_refused(error::misaligned, with_bad_page(bad, unaligned, bad_type));
        s.expect_refused(error::out_of_bounds, with_bad_page(bad, too_high, unaligned));
    }
}

TEST_CASE("out_of_frames at every allocation of a move leaves the space and the allocator as they were") {
    const auto mode = GENERATE(paging_mode::four_level, paging_mode::five_level);
    INFO("levels " << x86_64::levels(mode));
    populated s{mode};
    // Out of part of the 2 MiB page (one table for the split) to where a PD
    // and a PT are missing: three frames, the split's taken first.
    const auto from = range_of(0x4000'1000, 2 * kib4);
    const auto to = range_of(0x1'0000'0000, 2 * kib4);
    CHECK(inject_at_every_allocation(s, move(from, to)) == 3);
    CHECK(s.pt.translate(to.start() + kib4)->phys == phys_addr{0x30'1000});
    CHECK_FALSE(s.pt.translate(from.start()).has_value());
    CHECK(s.pt.translate(virt_addr{0x4000'3000})->phys == phys_addr{0x8000'3000});
    // Back into the split table: the fast path, no frame.
    CHECK(inject_at_every_allocation(s, move(to, from)) == 0);
}
