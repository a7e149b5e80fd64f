// The trap-counting hotness tracker: heat from the traps the monitor sees
// (conflicts with the stub, emulated accesses to displaced content), in a
// fixed-capacity table of granule slots with exponential decay per period.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/policy/hotness_table.hpp"
#include "asreloc/policy/hotness_tracker.hpp"

namespace asreloc {

// Capacity: slots tracked at once (see hotness_table for eviction). Every
// operation is O(Capacity); the table is a few dozen bytes per slot.
template <std::size_t Capacity = 64>
class trap_count_tracker {
public:
    constexpr explicit trap_count_tracker(hotness_config config = {}) noexcept : table_(config) {}

    constexpr void record_access(virt_addr va, std::uint32_t count) noexcept { table_.record(va, count); }
    constexpr void age() noexcept { table_.age(); }
    constexpr std::uint32_t hotness(const virt_range& r) const noexcept { return table_.hotness(r); }
    constexpr bool is_cold(const virt_range& r) const noexcept { return table_.is_cold(r); }
    constexpr result<virt_range> coldest_of(std::span<const virt_range> candidates) const noexcept {
        return table_.coldest_of(candidates);
    }
    constexpr std::size_t tracked() const noexcept { return table_.tracked(); }
    constexpr const hotness_config& config() const noexcept { return table_.config(); }

protected:
    // For trackers that add sources of heat (accessed_bit_tracker).
    constexpr void record(virt_addr va, std::uint64_t count) noexcept { table_.record(va, count); }

private:
    hotness_table<Capacity> table_;
};

static_assert(hotness_tracker<trap_count_tracker<>>);

}  // namespace asreloc
