#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "asreloc/paging/flush.hpp"

using namespace asreloc;

namespace {

// Which hook each invalidation took, in order.
struct call_log {
    enum class kind { page, range, all };
    struct call {
        kind how;
        virt_range range;
        bool operator==(const call&) const = default;
    };
    std::vector<call> calls;
    void invalidate_page(virt_addr va) { calls.push_back({kind::page, virt_range::of(va, page_bytes)}); }
    void invalidate_range(virt_range r) { calls.push_back({kind::range, r}); }
    void invalidate_all() { calls.push_back({kind::all, {}}); }
};
static_assert(tlb<call_log>);

constexpr virt_range pages(std::uint64_t first_page, std::uint64_t count) {
    return virt_range::of(virt_addr{first_page * page_bytes}, count * page_bytes);
}
constexpr virt_range top_page() { return virt_range::of(virt_addr{~std::uint64_t{0} - (page_bytes - 1)}, page_bytes); }

}  // namespace

TEST_CASE("flush names one page by invlpg, anything larger as a range, nothing when empty") {
    call_log log;
    flush::none().apply(log);
    CHECK(log.calls.empty());
    flush::of(pages(3, 1)).apply(log);
    flush::of(pages(3, 2)).apply(log);
    CHECK(log.calls == std::vector<call_log::call>{{call_log::kind::page, pages(3, 1)},
                                                   {call_log::kind::range, pages(3, 2)}});
}

TEST_CASE("flush::merge covers both ranges, and an empty flush changes nothing") {
    CHECK(flush::of(pages(8, 1)).merge(flush::of(pages(2, 2))) == flush::of(pages(2, 7)));
    CHECK(flush::of(pages(2, 2)).merge(flush::none()) == flush::of(pages(2, 2)));
    CHECK(flush::none().merge(flush::of(pages(2, 2))) == flush::of(pages(2, 2)));
    CHECK(flush::none().merge(flush::none()).empty());
}

TEST_CASE("flush_batch merges overlapping and touching ranges and keeps separate ones apart") {
    flush_batch<4> batch;
    batch.add(flush::of(pages(10, 2)));  // 10-11
    batch.add(flush::of(pages(12, 1)));  // right after: 10-12
    batch.add(flush::of(pages(9, 1)));   // right before: 9-12
    batch.add(flush::of(pages(11, 4)));  // overlaps: 9-14
    batch.add(flush::of(pages(16, 1)));  // one page apart: its own
    batch.add(flush::none());
    REQUIRE(batch.size() == 2);
    CHECK(batch[0] == pages(9, 6));
    CHECK(batch[1] == pages(16, 1));
    CHECK_FALSE(batch.overflowed());

    call_log log;
    batch.apply(log);
    CHECK(log.calls == std::vector<call_log::call>{{call_log::kind::range, pages(9, 6)},
                                                   {call_log::kind::page, pages(16, 1)}});
    CHECK(batch.size() == 0);
}

TEST_CASE("flush_batch does not wrap around the top of the address space when merging") {
    flush_batch<4> batch;
    batch.add(flush::of(top_page()));
    batch.add(flush::of(pages(0, 1)));  // "right after" 2^64 - 1 would be 0
    REQUIRE(batch.size() == 2);
    CHECK(batch[0] == top_page());
    CHECK(batch[1] == pages(0, 1));

    batch.add(flush::of(virt_range::of(top_page().start() - page_bytes, page_bytes)));
    REQUIRE(batch.size() == 2);
    CHECK(batch[0] == virt_range::of(top_page().start() - page_bytes, 2 * page_bytes));
}

TEST_CASE("flush_batch past its capacity invalidates everything once, then starts afresh") {
    flush_batch<2> batch;
    batch.add(flush::of(pages(0, 1)));
    batch.add(flush::of(pages(2, 1)));
    CHECK_FALSE(batch.overflowed());
    batch.add(flush::of(pages(1, 1)));  // touches a kept range: merged, no overflow
    CHECK_FALSE(batch.overflowed());
    batch.add(flush::of(pages(4, 1)));
    CHECK(batch.overflowed());

    call_log log;
    batch.apply(log);
    CHECK(log.calls == std::vector<call_log::call>{{call_log::kind::all, {}}});

    CHECK_FALSE(batch.overflowed());
    batch.add(flush::of(pages(7, 1)));
    log.calls.clear();
    batch.apply(log);
    CHECK(log.calls == std::vector<call_log::call>{{call_log::kind::page, pages(7, 1)}});
}

TEST_CASE("flush_batch::clear forgets what was added without invalidating") {
    flush_batch<1> batch;
    batch.add(flush::of(pages(0, 1)));
    batch.add(flush::of(pages(5, 1)));
    REQUIRE(batch.overflowed());
    batch.clear();
    call_log log;
    batch.apply(log);
    CHECK(log.calls.empty());
}
