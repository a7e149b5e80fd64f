// The bookkeeping both hotness trackers share: a fixed-capacity table of
// granule-aligned slots, each with a fixed-point heat that decays on age(),
// and a hot/cold state with hysteresis. Freestanding, no heap, no floating point.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"

namespace asreloc {

// Heat is fixed point with `fraction_bits` fractional bits: one access adds
// 1 << fraction_bits, so decay keeps a fractional memory of old accesses
// instead of dropping them to zero at once.
struct hotness_config {
    std::uint64_t granularity = page_bytes;  // slot size: a power of two >= 4 KiB
    unsigned decay_shift = 1;                // age(): heat -= heat >> decay_shift (1 halves it)
    // Hysteresis: a slot turns hot when its heat reaches hot_threshold and
    // turns cold again only when it falls to cold_threshold or below, so a
    // placement near the boundary does not flip between hop and stay every
    // period. Both in heat units (accesses << fraction_bits).
    std::uint32_t hot_threshold = 8u << 8;
    std::uint32_t cold_threshold = 2u << 8;
};

template <std::size_t Capacity>
class hotness_table {
public:
    static constexpr unsigned fraction_bits = 8;
    static constexpr std::size_t capacity = Capacity;

    constexpr explicit hotness_table(hotness_config config = {}) noexcept : config_(config) {
        Expects(config.granularity >= page_bytes && (config.granularity & (config.granularity - 1)) == 0);
        Expects(config.cold_threshold < config.hot_threshold && config.decay_shift > 0 && config.decay_shift < 32);
    }

    // Adds `count` accesses to the slot of va. A new slot in a full table
    // replaces the coldest one (lowest heat, then lowest address): the table
    // remembers the hottest recent slots, which are the ones that matter for
    // "is this cold?" (an evicted slot reads as cold).
    constexpr void record(virt_addr va, std::uint64_t count) noexcept {
        if (count == 0) return;
        const std::uint64_t base = va.value() & ~(config_.granularity - 1);
        slot& s = find_or_claim(base);
        const std::uint64_t add = count > (max_heat >> fraction_bits) ? max_heat : count << fraction_bits;
        s.heat = add > max_heat - s.heat ? max_heat : static_cast<std::uint32_t>(s.heat + add);
        update_state(s);
    }

    constexpr void age() noexcept {
        std::size_t kept = 0;
        for (std::size_t i = 0; i < used_; ++i) {
            slot s = slots_[i];
            s.heat -= s.heat >> config_.decay_shift;
            if (s.heat < (1u << config_.decay_shift)) s.heat = 0;  // the shift would never reach zero
            update_state(s);
            if (s.heat != 0 || s.hot) slots_[kept++] = s;  // forget slots that decayed to nothing
        }
        used_ = kept;
    }

    // Sum of the heat of the slots overlapping `range` (saturating).
    constexpr std::uint32_t hotness(const virt_range& range) const noexcept {
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < used_; ++i)
            if (span_of(slots_[i]).overlaps(range)) sum += slots_[i].heat;
        return sum > max_heat ? max_heat : static_cast<std::uint32_t>(sum);
    }

    // Cold: no slot overlapping `range` is in the hot state.
    constexpr bool is_cold(const virt_range& range) const noexcept {
        for (std::size_t i = 0; i < used_; ++i)
            if (slots_[i].hot && span_of(slots_[i]).overlaps(range)) return false;
        return true;
    }

    // The candidate with the least heat; ties go to the lowest address.
    // Errors: empty_range (no candidates).
    constexpr result<virt_range> coldest_of(std::span<const virt_range> candidates) const noexcept {
        if (candidates.empty()) return failure(error::empty_range);
        const virt_range* best = &candidates[0];
        std::uint32_t best_heat = hotness(*best);
        for (const auto& c : candidates.subspan(1)) {
            const auto h = hotness(c);
            if (h < best_heat || (h == best_heat && c.start() < best->start())) {
                best = &c;
                best_heat = h;
            }
        }
        return *best;
    }

    constexpr std::size_t tracked() const noexcept { return used_; }
    constexpr const hotness_config& config() const noexcept { return config_; }

private:
    static constexpr std::uint32_t max_heat = ~std::uint32_t{0};

    struct slot {
        std::uint64_t base = 0;
        std::uint32_t heat = 0;
        bool hot = false;
    };

    constexpr virt_range span_of(const slot& s) const noexcept {
        return virt_range::of(virt_addr{s.base}, config_.granularity);
    }

    constexpr void update_state(slot& s) const noexcept {
        if (s.heat >= config_.hot_threshold) s.hot = true;
        else if (s.heat <= config_.cold_threshold) s.hot = false;
    }

    constexpr slot& find_or_claim(std::uint64_t base) noexcept {
        for (std::size_t i = 0; i < used_; ++i)
            if (slots_[i].base == base) return slots_[i];
        if (used_ < Capacity) {
            slots_[used_] = slot{base, 0, false};
            return slots_[used_++];
        }
        std::size_t victim = 0;
        for (std::size_t i = 1; i < used_; ++i)
            if (slots_[i].heat < slots_[victim].heat ||
                (slots_[i].heat == slots_[victim].heat && slots_[i].base < slots_[victim].base))
                victim = i;
        slots_[victim] = slot{base, 0, false};
        return slots_[victim];
    }

    hotness_config config_;
    std::array<slot, Capacity> slots_{};
    std::size_t used_ = 0;
};

}  // namespace asreloc
