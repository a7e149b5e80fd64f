// The hotness-tracker policy: how often does the guest touch a range? The
// manager asks it whether the stub's placement is a range the guest rarely
// touches (then it stops hopping) and which candidate ranges are cold.
#pragma once

#include <concepts>
#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"

namespace asreloc {

// record_access(va, count)
//   The guest touched va `count` times in a way the monitor saw (a trap: a
//   conflict, an emulated access to displaced content).
// age()
//   One period passed: older observations weigh less (decay).
// hotness(range)
//   How hot `range` is now, in the tracker's unit (higher is hotter; 0 is
//   untouched since long ago). Monotone in the observations.
// is_cold(range)
//   Whether `range` is cold enough to keep the stub there.
template <class H>
concept hotness_tracker = requires(H& h, const H& ch, virt_addr va, virt_range r, std::uint32_t count) {
    h.record_access(va, count);
    h.age();
    { ch.hotness(r) } -> std::same_as<std::uint32_t>;
    { ch.is_cold(r) } -> std::same_as<bool>;
};

// A tracker that also samples accessed bits of a space (for ranges the guest
// maps and can touch without trapping, e.g. candidate placements).
// sample(space, range)
//   Harvests (query-and-clear) the accessed bits of `range` in `space` and
//   records them; returns the flush the harvest needs.
template <class H, class P>
concept sampling_hotness_tracker = hotness_tracker<H> && accessed_dirty_page_table<P> &&
                                   requires(H& h, P& space, virt_range r) {
                                       { h.sample(space, r) } -> std::same_as<result<flush>>;
                                   };

}  // namespace asreloc
