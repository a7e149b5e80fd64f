#include <catch2/catch.hpp>

#include "asreloc/core/address.hpp"

using namespace asreloc;

TEST_CASE("canonical addresses follow the width of the paging mode") {
    CHECK(virt_addr{0x0000'7fff'ffff'f000}.is_canonical(48));
    CHECK_FALSE(virt_addr{0x0000'8000'0000'0000}.is_canonical(48));
    CHECK(virt_addr{0xffff'8000'0000'0000}.is_canonical(48));
    CHECK(virt_addr{0x0000'8000'0000'0000}.is_canonical(57));
    CHECK_FALSE(virt_addr{0x0100'0000'0000'0000}.is_canonical(57));
    CHECK(virt_addr{0xff00'0000'0000'0000}.is_canonical(57));
}

TEST_CASE("a range ending at the top of the space has no overflowing end") {
    const auto top = virt_range::make(virt_addr{0xffff'ffff'ffff'f000}, page_bytes);
    REQUIRE(top.has_value());
    CHECK(top->last().value() == ~std::uint64_t{0});
    CHECK(top->size() == page_bytes);
    CHECK(failed_with(virt_range::make(virt_addr{0xffff'ffff'ffff'f000}, 2 * page_bytes), error::non_canonical));
    CHECK(failed_with(virt_range::make(virt_addr{0}, 0), error::empty_range));
}

TEST_CASE("ranges overlap and intersect at their shared bytes") {
    const auto a = virt_range::of(virt_addr{0x1000}, 0x3000);
    const auto b = virt_range::of(virt_addr{0x3000}, 0x3000);
    const auto c = virt_range::of(virt_addr{0x4000}, 0x1000);
    CHECK(a.overlaps(b));
    CHECK_FALSE(a.overlaps(c));
    const auto i = intersect(a, b);
    REQUIRE(i.any);
    CHECK(i.range == virt_range::of(virt_addr{0x3000}, 0x1000));
    CHECK_FALSE(intersect(a, c).any);
}

TEST_CASE("typed pages exist only at aligned addresses") {
    CHECK(failed_with(page<size_2m>::at(virt_addr{0x1000}), error::misaligned));
    const auto p = page<size_2m>::at(virt_addr{0x20'0000});
    REQUIRE(p.has_value());
    CHECK(p->range().size() == bytes(page_size::size_2m));
    CHECK(page<size_1g>::containing(virt_addr{0x4123'4567}).start().value() == 0x4000'0000);
    CHECK(failed_with(frame<size_4k>::at(phys_addr{0x1001}), error::misaligned));
}
