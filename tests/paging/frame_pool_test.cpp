#include <catch2/catch.hpp>

#include <set>

#include "asreloc/paging/frame_pool.hpp"

using namespace asreloc;

TEST_CASE("a frame pool hands out each frame once until it is given back") {
    frame_pool<130> pool{phys_addr{0x10'0000}, 130};
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 130; ++i) {
        auto f = pool.allocate_frame();
        REQUIRE(f.has_value());
        CHECK(f->is_aligned(page_size::size_4k));
        CHECK(pool.owns(*f));
        CHECK(seen.insert(f->value()).second);
    }
    CHECK(pool.free_count() == 0);
    CHECK(failed_with(pool.allocate_frame(), error::out_of_frames));

    pool.deallocate_frame(phys_addr{0x10'0000 + 77 * page_bytes});
    CHECK(pool.free_count() == 1);
    auto again = pool.allocate_frame();
    REQUIRE(again.has_value());
    CHECK(again->value() == 0x10'0000 + 77 * page_bytes);
}

TEST_CASE("a frame pool never hands out frames past its count") {
    frame_pool<128> pool{phys_addr{0}, 3};
    for (int i = 0; i < 3; ++i) REQUIRE(pool.allocate_frame().has_value());
    CHECK(failed_with(pool.allocate_frame(), error::out_of_frames));
    CHECK_FALSE(pool.owns(phys_addr{3 * page_bytes}));
}
