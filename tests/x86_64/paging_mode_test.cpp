// 4-level and 5-level paging: levels, widths, the canonical halves, which bits
// of a linear address index each level, and sign extension.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>

#include "asreloc/core/address.hpp"
#include "asreloc/x86_64/paging_mode.hpp"
#include "support/seed.hpp"

using namespace asreloc;
using namespace asreloc::x86_64;

TEST_CASE("4-level paging has 4 levels and 48-bit addresses, 5-level paging 5 and 57") {
    CHECK(levels(paging_mode::four_level) == 4);
    CHECK(width(paging_mode::four_level) == 48);
    CHECK(levels(paging_mode::five_level) == 5);
    CHECK(width(paging_mode::five_level) == 57);
}

TEST_CASE("each level translates 9 more bits, from 12 at the page table to 48 at the PML5") {
    CHECK(entries_per_table == 512);
    CHECK(level_shift(1) == 12);
    CHECK(level_shift(2) == 21);
    CHECK(level_shift(3) == 30);
    CHECK(level_shift(4) == 39);
    CHECK(level_shift(5) == 48);
    CHECK(entry_span(1) == 0x1000);
    CHECK(entry_span(2) == 0x20'0000);
    CHECK(entry_span(3) == 0x4000'0000);
    CHECK(entry_span(4) == 0x80'0000'0000);
    CHECK(entry_span(5) == 0x1'0000'0000'0000);
    CHECK(std::string{level_name(1)} == "PT");
    CHECK(std::string{level_name(3)} == "PDPT");
    CHECK(std::string{level_name(5)} == "PML5");
}

TEST_CASE("the canonical halves end at bit 47 with 4-level paging and at bit 56 with 5-level paging") {
    const unsigned w4 = width(paging_mode::four_level);
    CHECK(virt_addr{0}.is_canonical(w4));
    CHECK(virt_addr{0x0000'7fff'ffff'ffff}.is_canonical(w4));
    CHECK_FALSE(virt_addr{0x0000'8000'0000'0000}.is_canonical(w4));
    CHECK_FALSE(virt_addr{0xffff'7fff'ffff'ffff}.is_canonical(w4));
    CHECK(virt_addr{0xffff'8000'0000'0000}.is_canonical(w4));
    CHECK(virt_addr{0xffff'ffff'ffff'ffff}.is_canonical(w4));
    CHECK_FALSE(virt_addr{0x0100'0000'0000'0000}.is_canonical(w4));

    const unsigned w5 = width(paging_mode::five_level);
    CHECK(virt_addr{0x0000'8000'0000'0000}.is_canonical(w5));  // the 4-level hole is mapped here
    CHECK(virt_addr{0x00ff'ffff'ffff'ffff}.is_canonical(w5));
    CHECK_FALSE(virt_addr{0x0100'0000'0000'0000}.is_canonical(w5));
    CHECK_FALSE(virt_addr{0xfeff'ffff'ffff'ffff}.is_canonical(w5));
    CHECK(virt_addr{0xff00'0000'0000'0000}.is_canonical(w5));
    CHECK(virt_addr{0xffff'8000'0000'0000}.is_canonical(w5));
}

TEST_CASE("table_index takes bits 20:12, 29:21, 38:30, 47:39 and 56:48") {
    const std::uint64_t va = (std::uint64_t{0x1ab} << 48) | (std::uint64_t{3} << 39) | (std::uint64_t{5} << 30) |
                             (std::uint64_t{7} << 21) | (std::uint64_t{9} << 12) | 0xabc;
    CHECK(table_index(va, 1) == 9);
    CHECK(table_index(va, 2) == 7);
    CHECK(table_index(va, 3) == 5);
    CHECK(table_index(va, 4) == 3);
    CHECK(table_index(va, 5) == 0x1ab);
    for (unsigned level = 1; level <= 3; ++level) CHECK(table_index(0x0000'7fff'ffff'ffff, level) == 511);
    CHECK(table_index(0x0000'7fff'ffff'ffff, 4) == 255);  // the last entry of the lower half
    CHECK(table_index(0x0000'7fff'ffff'ffff, 5) == 0);
}

TEST_CASE("the upper canonical half starts at the middle entry of the top table in both modes") {
    CHECK(table_index(0xffff'8000'0000'0000, 4) == 256);
    CHECK(table_index(0xffff'8000'0000'0000, 3) == 0);
    CHECK(table_index(0xff00'0000'0000'0000, 5) == 256);
    CHECK(table_index(0xff00'0000'0000'0000, 4) == 0);
    CHECK(table_index(0xffff'ffff'ffff'f000, 5) == 511);
    for (unsigned level = 1; level <= 4; ++level) CHECK(table_index(0xffff'ffff'ffff'f000, level) == 511);
}

TEST_CASE("sign_extend copies bit 47 (4-level) or bit 56 (5-level) into the bits above") {
    CHECK(sign_extend(0x0000'8000'0000'0000, 48) == 0xffff'8000'0000'0000);
    CHECK(sign_extend(0x0000'7fff'ffff'ffff, 48) == 0x0000'7fff'ffff'ffff);
    CHECK(sign_extend(0x1234'ffff'ffff'f000, 48) == 0xffff'ffff'ffff'f000);
    CHECK(sign_extend(0x0100'0000'0000'0000, 57) == 0xff00'0000'0000'0000);
    CHECK(sign_extend(0x00ff'ffff'ffff'ffff, 57) == 0x00ff'ffff'ffff'ffff);
    CHECK(sign_extend(0x0000'8000'0000'0000, 57) == 0x0000'8000'0000'0000);
}

TEST_CASE("a canonical address is rebuilt from its table indices and offset by sign extension") {
    const auto seed = test::test_seed();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    std::mt19937_64 rng{seed};
    for (const auto mode : {paging_mode::four_level, paging_mode::five_level}) {
        const unsigned w = width(mode);
        for (int i = 0; i < 2000; ++i) {
            const auto va = sign_extend(rng(), w);
            INFO("va " << std::hex << va);
            REQUIRE(virt_addr{va}.is_canonical(w));
            std::uint64_t rebuilt = va & 0xfff;
            for (unsigned level = 1; level <= levels(mode); ++level)
                rebuilt |= std::uint64_t{table_index(va, level)} << level_shift(level);
            CHECK(sign_extend(rebuilt, w) == va);
            CHECK(sign_extend(va, w) == va);
        }
    }
}
