// pcg32 and uniform_below (core/pcg32.hpp), the generator the random policies
// and the property tests draw from.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <random>

#include "asreloc/core/pcg32.hpp"
#include "support/seed.hpp"

using namespace asreloc;

static_assert(std::uniform_random_bit_generator<pcg32>);

TEST_CASE("pcg32 reproduces the reference pcg32 sequence for the demo seed") {
    // pcg32_random_r with initstate 42, initseq 54 (pcg-c-basic, pcg32-demo).
    pcg32 gen{42, 54};
    const std::array<std::uint32_t, 6> expected{0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                                0x83d2f293, 0xbfa4784b, 0xcbed606e};
    for (auto e : expected) CHECK(gen() == e);
}

TEST_CASE("pcg32 with the same seed gives the same sequence, another stream differs") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    pcg32 a{seed}, b{seed}, c{seed, 7};
    bool differs = false;
    for (int i = 0; i < 100; ++i) {
        const auto x = a();
        CHECK(x == b());
        differs = differs || x != c();
    }
    CHECK(differs);
}

TEST_CASE("uniform_below stays below its bound, including 1 and bounds above 2^32") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    pcg32 gen{seed};
    std::mt19937_64 gen64{seed};
    for (int i = 0; i < 1000; ++i) {
        CHECK(uniform_below(gen, 1) == 0);
        CHECK(uniform_below(gen, 3) < 3);
        CHECK(uniform_below(gen, (std::uint64_t{1} << 40) + 5) < (std::uint64_t{1} << 40) + 5);
        CHECK(uniform_below(gen64, ~std::uint64_t{0}) < ~std::uint64_t{0});
    }
}

TEST_CASE("uniform_below reaches values above 2^32 when the bound allows them") {
    pcg32 gen{1};
    bool high = false;
    for (int i = 0; i < 64 && !high; ++i) high = uniform_below(gen, std::uint64_t{1} << 50) >> 32 != 0;
    CHECK(high);
}

TEST_CASE("the wide multiply behind uniform_below gives the full 128-bit product") {
    constexpr auto max = ~std::uint64_t{0};
    constexpr auto p = detail::multiply_wide(max, max);  // (2^64-1)^2 = 2^128 - 2^65 + 1
    STATIC_REQUIRE(p.high == max - 1);
    STATIC_REQUIRE(p.low == 1);
    constexpr auto q = detail::multiply_wide(0x1'0000'0001ULL, 0x1'0000'0000ULL);
    STATIC_REQUIRE(q.high == 1);
    STATIC_REQUIRE(q.low == 0x1'0000'0000ULL);
}
