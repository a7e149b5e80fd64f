// The victim-selector policy: when no free range is left, which range of the
// guest's do we displace into the shadow store? (US 7,020,738: at random.)
// Pinned ranges (MMIO, the guest's own page tables, the current placement,
// anything the caller must not displace) are never chosen.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"

namespace asreloc {

// The candidates are the `alignment`-aligned ranges of `size` bytes inside
// `window` that are canonical in every space and overlap no pinned range.
struct victim_request {
    std::uint64_t size = page_bytes;       // a non-zero multiple of 4 KiB
    std::uint64_t alignment = page_bytes;  // a power of two, at least 4 KiB
    virt_range window = virt_range::everything();
    std::span<const virt_range> pinned{};  // any order, may overlap each other
};

// select(spaces, request)
//   One candidate range (see victim_request), chosen by the policy: uniformly
//   at random, coldest first, ... It may hold guest mappings in any of
//   `spaces` (that is the point) or none.
//   Errors: empty_range, misaligned (as for region_request), no_victim (no
//   candidate at all).
template <class V, class P>
concept victim_selector = page_table<P> && requires(V& v, std::span<const P* const> spaces,
                                                    const victim_request& request) {
    { v.select(spaces, request) } -> std::same_as<result<virt_range>>;
};

}  // namespace asreloc
