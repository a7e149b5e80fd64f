// What the relocation manager counts. Plain counters, read by value; a failed
// operation changes none of them except `rollbacks`.
#pragma once

#include <cstdint>

namespace asreloc {

struct statistics {
    std::uint64_t placements = 0;             // successful place() calls (not counted as relocations below)
    std::uint64_t victim_placements = 0;      // of those, placements that displaced guest content
    std::uint64_t conflicts = 0;              // conflicts resolved (a guest fault or mapping hit the stub)
    std::uint64_t conflicts_into_free = 0;    // of those, resolved into a free range (claim 9)
    std::uint64_t conflicts_over_victim = 0;  // of those, resolved over a victim (claim 10)
    std::uint64_t free_relocations = 0;       // moves of a placed stub into a range no space mapped (claim 9)
    std::uint64_t victim_relocations = 0;     // moves of a placed stub that displaced guest content (claim 10)
    std::uint64_t hops = 0;                // moves made for hotness by tick() (claim 12)
    std::uint64_t pages_displaced = 0;     // guest pages copied into the shadow store
    std::uint64_t pages_restored = 0;      // shadow pages put back into the guest
    std::uint64_t bytes_copied = 0;        // both directions, 4 KiB per page
    std::uint64_t shadow_reads = 0;        // emulated reads served (partly) from the shadow store (claim 11)
    std::uint64_t shadow_writes = 0;       // emulated writes served (partly) from the shadow store
    std::uint64_t shadow_bytes = 0;        // bytes of those accesses that came from / went to the shadow store
    std::uint64_t fast_traps = 0;          // from the attached trap_router (claim 7)
    std::uint64_t slow_traps = 0;          // from the attached trap_router (claim 8)
    std::uint64_t reflected = 0;           // faults handed back to the guest (handle_fault + router)
    std::uint64_t rollbacks = 0;           // operations that failed and were undone
    std::uint64_t ticks = 0;               // tick() calls
    std::uint64_t settled = 0;             // times hopping stopped on a cold placement

    constexpr bool operator==(const statistics&) const noexcept = default;
};

}  // namespace asreloc
