// What a page-table walk reports: one leaf mapping, the result of a translation,
// and how walks are ordered and stopped.
#pragma once

#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"

namespace asreloc {

// One leaf entry: a page of `size` bytes at `start`, backed by the frame at
// `phys`. `attrs` are the effective attributes, combined along the walk as the
// CPU combines them (x86: writable and user ANDed, executable ANDed, i.e. XD
// ORed; memory type and protection key from the leaf).
struct mapping {
    virt_addr start;
    phys_addr phys;
    page_size size = page_size::size_4k;
    attributes attrs;
    bool accessed = false;
    bool dirty = false;

    constexpr virt_range range() const noexcept { return virt_range::of(start, bytes(size)); }
    constexpr bool operator==(const mapping&) const noexcept = default;
};

// The physical address of one virtual address, with the page that holds it.
struct translation {
    phys_addr phys;
    mapping page;

    constexpr bool operator==(const translation&) const noexcept = default;
};

enum class walk_order : std::uint8_t { bottom_up, top_down };

// A walk callback's answer, and a walk's: did it run to the end of the window?
enum class walk_control : std::uint8_t { proceed, stop };

}  // namespace asreloc
