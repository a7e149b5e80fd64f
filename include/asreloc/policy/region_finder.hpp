// The region-finder policy: where can the stub go without displacing anything?
// A finder reads only the backends' gap walks, so its cost follows the populated
// part of the tables, never the size of the address space; over spaces that
// index their free space (indexed_page_table) it is one descent of the index.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"

namespace asreloc {

// What the caller needs: `size` bytes at an `alignment` boundary, with at least
// `guard` free bytes on each side, inside `window`.
struct region_request {
    std::uint64_t size = page_bytes;       // a non-zero multiple of 4 KiB
    std::uint64_t alignment = page_bytes;  // a power of two, at least 4 KiB
    std::uint64_t guard = 0;               // a multiple of 4 KiB; the guards lie inside the window too
    virt_range window = virt_range::everything();
};

// find_free(spaces, request)
//   A range satisfying `request` where none of `spaces` maps anything (one
//   guest process = one page table; the monitor space is usually one of them,
//   since the stub sits at the same address there). Which of the fitting
//   ranges it returns is the policy (top-down, bottom-up, best-fit, ...); the
//   same tables and request give the same answer.
//   Errors: empty_range (size 0 or no spaces), misaligned (size or guard not
//   a multiple of 4 KiB, alignment not a power of two >= 4 KiB),
//   no_free_range.
template <class F, class P>
concept region_finder = page_table<P> && requires(const F& f, std::span<const P* const> spaces,
                                                  const region_request& request) {
    { f.find_free(spaces, request) } -> std::same_as<result<virt_range>>;
};

}  // namespace asreloc
