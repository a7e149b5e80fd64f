// The uniform random victim selector (US 7,020,738): every candidate range is
// equally likely. The k-th eligible candidate is computed from the blocked
// slot intervals (pins and non-canonical holes), never by enumerating slots.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/pcg32.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/victim_selector.hpp"

namespace asreloc {

namespace victim_detail {

// A closed interval of slot indices.
struct slot_interval {
    std::uint64_t first = 0;
    std::uint64_t last = 0;
};

constexpr bool is_power_of_two(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

constexpr status check(std::size_t spaces, const victim_request& r) noexcept {
    if (spaces == 0 || r.size == 0) return failure(error::empty_range);
    if (!is_aligned(r.size, page_bytes) || !is_power_of_two(r.alignment) || r.alignment < page_bytes)
        return failure(error::misaligned);
    return {};
}

// The candidate slots: slot j starts at base + j * alignment; `count` of them.
struct slot_grid {
    std::uint64_t base = 0;
    std::uint64_t alignment = 0;
    std::uint64_t size = 0;
    std::uint64_t count = 0;

    static constexpr bool make(const victim_request& r, slot_grid& g) noexcept {
        const std::uint64_t lo = r.window.start().value(), hi = r.window.last().value();
        const std::uint64_t base = (lo + r.alignment - 1) & ~(r.alignment - 1);
        if (base < lo || base > hi || hi - base < r.size - 1) return false;
        const std::uint64_t last_start = (hi - (r.size - 1)) & ~(r.alignment - 1);
        g = {base, r.alignment, r.size, (last_start - base) / r.alignment + 1};
        return true;
    }

    // Slots whose range overlaps [b0, b1]; false when none do.
    constexpr bool blocked_by(std::uint64_t b0, std::uint64_t b1, slot_interval& out) const noexcept {
        const std::uint64_t grid_last = base + (count - 1) * alignment + (size - 1);
        if (b1 < base || b0 > grid_last) return false;
        // First slot j with base + j*a + size - 1 >= b0.
        std::uint64_t first = 0;
        if (b0 > base + (size - 1)) first = (b0 - base - (size - 1) + alignment - 1) / alignment;
        const std::uint64_t last_slot = b1 >= base ? (b1 - base) / alignment : 0;
        const std::uint64_t last = last_slot < count - 1 ? last_slot : count - 1;
        if (first > last) return false;
        out = {first, last};
        return true;
    }

    constexpr virt_range at(std::uint64_t j) const noexcept { return virt_range::of(virt_addr{base + j * alignment}, size); }
};

// The non-canonical hole of a space whose canonical addresses are the two
// sign-extended halves of some width (every x86 paging mode): found with 64
// probes of is_canonical, so any page_table works.
template <class P>
constexpr bool non_canonical_hole(const P& space, std::uint64_t& first, std::uint64_t& last) noexcept {
    std::uint64_t low_last = 0;  // highest canonical address of the lower half
    for (unsigned bits = 63; bits > 0; --bits) {
        const std::uint64_t candidate = (std::uint64_t{1} << bits) - 1;
        if (space.is_canonical(virt_addr{candidate})) {
            low_last = candidate;
            break;
        }
    }
    if (low_last == (std::uint64_t{1} << 63) - 1) return false;  // 64-bit space: no hole
    first = low_last + 1;
    last = ~low_last;  // the upper half starts at ~low_last + 1
    return true;
}

}  // namespace victim_detail

// Selects uniformly among the candidates of a victim_request. `MaxBlocked`
// bounds the pinned ranges plus one non-canonical hole per space; past it the
// selector answers capacity_exceeded (no heap: the intervals live on the stack).
template <std::uniform_random_bit_generator Gen, std::size_t MaxBlocked = 64>
class random_victim {
public:
    static constexpr std::size_t max_blocked = MaxBlocked;

    explicit random_victim(Gen& gen) noexcept : gen_(&gen) {}

    template <page_table P>
    result<virt_range> select(std::span<const P* const> spaces, const victim_request& request) {
        using namespace victim_detail;
        if (auto ok = check(spaces.size(), request); !ok) return failure(ok.error_code());
        slot_grid grid;
        if (!slot_grid::make(request, grid)) return failure(error::no_victim);
        std::array<slot_interval, MaxBlocked> blocked{};
        std::size_t n = 0;
        auto add = [&](std::uint64_t b0, std::uint64_t b1) {
            slot_interval s;
            if (!grid.blocked_by(b0, b1, s)) return true;
            if (n == MaxBlocked) return false;
            blocked[n++] = s;
            return true;
        };
        for (const P* space : spaces) {
            std::uint64_t h0 = 0, h1 = 0;
            if (non_canonical_hole(*space, h0, h1) && !add(h0, h1)) return failure(error::capacity_exceeded);
        }
        for (const virt_range& pin : request.pinned)
            if (!add(pin.start().value(), pin.last().value())) return failure(error::capacity_exceeded);
        n = sort_and_merge(blocked, n);
        std::uint64_t blocked_slots = 0;
        for (std::size_t i = 0; i < n; ++i) blocked_slots += blocked[i].last - blocked[i].first + 1;
        const std::uint64_t eligible = grid.count - blocked_slots;
        if (eligible == 0) return failure(error::no_victim);
        std::uint64_t j = uniform_below(*gen_, eligible);
        for (std::size_t i = 0; i < n && blocked[i].first <= j; ++i) j += blocked[i].last - blocked[i].first + 1;
        return grid.at(j);
    }

private:
    // Insertion sort (the buffer is small), then merge overlapping/adjacent intervals.
    static std::size_t sort_and_merge(std::array<victim_detail::slot_interval, MaxBlocked>& b, std::size_t n) noexcept {
        for (std::size_t i = 1; i < n; ++i) {
            const auto v = b[i];
            std::size_t k = i;
            for (; k > 0 && b[k - 1].first > v.first; --k) b[k] = b[k - 1];
            b[k] = v;
        }
        std::size_t out = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (out > 0 && b[i].first <= b[out - 1].last + 1) {
                if (b[i].last > b[out - 1].last) b[out - 1].last = b[i].last;
            } else {
                b[out++] = b[i];
            }
        }
        return out;
    }

    Gen* gen_;
};

}  // namespace asreloc
