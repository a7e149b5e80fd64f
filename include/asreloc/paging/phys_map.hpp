// How the monitor reaches physical memory: page-table pages, stub frames and
// guest frames are all read and written through it. A direct map at a fixed
// offset (as Linux and most hypervisors keep) is the usual implementation; the
// identity map is the offset 0 case.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

#include "asreloc/core/address.hpp"

namespace asreloc {

// to_virt(p): a pointer through which the byte at physical address p can be
// read and written. Must be valid for at least the rest of p's 4 KiB frame.
template <class M>
concept phys_map = requires(const M& m, phys_addr p) {
    { m.to_virt(p) } -> std::same_as<std::byte*>;
};

// Physical memory reached at a fixed offset from its address.
class offset_phys_map {
public:
    constexpr explicit offset_phys_map(std::uintptr_t offset) noexcept : offset_(offset) {}
    std::byte* to_virt(phys_addr p) const noexcept {
        return reinterpret_cast<std::byte*>(p.value() + offset_);
    }
    constexpr std::uintptr_t offset() const noexcept { return offset_; }

private:
    std::uintptr_t offset_;
};

}  // namespace asreloc
