// A small freestanding random generator for the victim selector (PCG-XSH-RR
// 64/32, O'Neill 2014) and an unbiased bounded draw that works on any
// std::uniform_random_bit_generator (pcg32 here, absl::BitGen hosted).
#pragma once

#include <concepts>
#include <cstdint>
#include <limits>
#include <random>

namespace asreloc {

class pcg32 {
public:
    using result_type = std::uint32_t;

    constexpr explicit pcg32(std::uint64_t seed = 0x853c49e6748fea9bULL,
                             std::uint64_t stream = 0xda3e39cb94b95bdbULL) noexcept {
        seed_with(seed, stream);
    }

    // The stream selects one of 2^63 independent sequences (the increment must be odd).
    constexpr void seed_with(std::uint64_t seed, std::uint64_t stream = 0xda3e39cb94b95bdbULL) noexcept {
        state_ = 0;
        increment_ = (stream << 1) | 1;
        step();
        state_ += seed;
        step();
    }

    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

    constexpr result_type operator()() noexcept {
        const std::uint64_t old = state_;
        step();
        const auto xorshifted = static_cast<std::uint32_t>(((old >> 18) ^ old) >> 27);
        const auto rot = static_cast<unsigned>(old >> 59);
        return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
    }

    constexpr bool operator==(const pcg32&) const noexcept = default;

private:
    constexpr void step() noexcept { state_ = state_ * 6364136223846793005ULL + increment_; }

    std::uint64_t state_ = 0;
    std::uint64_t increment_ = 1;
};

namespace detail {

// 64 uniform bits from a generator whose range is 32 or 64 full bits (what
// pcg32, mt19937(_64) and absl::BitGen give); other ranges are refused at
// compile time rather than silently biased.
template <std::uniform_random_bit_generator Gen>
constexpr std::uint64_t draw_64(Gen& gen) {
    constexpr auto span = static_cast<std::uint64_t>(Gen::max() - Gen::min());
    static_assert(span == 0xffffffffULL || span == ~std::uint64_t{0},
                  "draw_64 needs a generator giving 32 or 64 uniform bits per call");
    if constexpr (span == ~std::uint64_t{0}) {
        return static_cast<std::uint64_t>(gen() - Gen::min());
    } else {
        const auto hi = static_cast<std::uint64_t>(gen() - Gen::min());
        const auto lo = static_cast<std::uint64_t>(gen() - Gen::min());
        return (hi << 32) | lo;
    }
}

// The full 128-bit product of two 64-bit values, in portable C++ (no
// __int128, which -Wpedantic rejects).
struct wide_product {
    std::uint64_t high = 0;
    std::uint64_t low = 0;
};

constexpr wide_product multiply_wide(std::uint64_t a, std::uint64_t b) noexcept {
    const std::uint64_t a_lo = a & 0xffffffffULL, a_hi = a >> 32;
    const std::uint64_t b_lo = b & 0xffffffffULL, b_hi = b >> 32;
    const std::uint64_t lo_lo = a_lo * b_lo;
    const std::uint64_t hi_lo = a_hi * b_lo;
    const std::uint64_t lo_hi = a_lo * b_hi;
    const std::uint64_t hi_hi = a_hi * b_hi;
    const std::uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xffffffffULL) + lo_hi;
    return {hi_hi + (hi_lo >> 32) + (cross >> 32), (cross << 32) | (lo_lo & 0xffffffffULL)};
}

}  // namespace detail

// A uniform integer in [0, n) for n > 0: Lemire's multiply-and-reject
// ("Fast random integer generation in an interval", 2019). The rejection of
// the low products below 2^64 mod n removes the modulo bias exactly.
template <std::uniform_random_bit_generator Gen>
constexpr std::uint64_t uniform_below(Gen& gen, std::uint64_t n) {
    auto product = detail::multiply_wide(detail::draw_64(gen), n);
    if (product.low < n) {
        const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
        while (product.low < threshold) product = detail::multiply_wide(detail::draw_64(gen), n);
    }
    return product.high;
}

}  // namespace asreloc
