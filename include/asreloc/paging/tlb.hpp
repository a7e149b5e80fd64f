// The TLB-invalidation hook: how a page-table change reaches the processors.
// The embedder implements it (invlpg, a CR3 reload, INVPCID, and an IPI-based
// shootdown of other CPUs if the space is live on them); asreloc only says
// which range changed.
#pragma once

#include <concepts>

#include "asreloc/core/address.hpp"

namespace asreloc {

// invalidate_page(va): drop any translation of the 4 KiB page containing va
//   (a large page containing va included).
// invalidate_range(r): drop every translation that overlaps r. An
//   implementation may widen it (e.g. to invalidate_all past some size).
// invalidate_all(): drop every translation of the space, global ones included.
// All three are called after the entries changed, never before.
template <class T>
concept tlb = requires(T& t, virt_addr va, virt_range r) {
    t.invalidate_page(va);
    t.invalidate_range(r);
    t.invalidate_all();
};

// For spaces that are not loaded on any CPU (a guest space under construction,
// a test): every invalidation is a no-op.
struct no_tlb {
    constexpr void invalidate_page(virt_addr) noexcept {}
    constexpr void invalidate_range(virt_range) noexcept {}
    constexpr void invalidate_all() noexcept {}
};

}  // namespace asreloc
