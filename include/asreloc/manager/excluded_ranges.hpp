// A window with a few ranges left out of it: what the manager searches and
// unmaps around (the stub's placement inside a guest unmap; the range the
// guest needs and the candidates the fixups refused, around a free-range
// search). Fixed capacity, no heap.
#pragma once

#include <cstddef>

#include <gsl/assert>

#include "asreloc/core/address.hpp"

namespace asreloc {

// Up to N ranges, ascending.
template <std::size_t N>
struct range_parts {
    virt_range part[N]{};
    std::size_t count = 0;
};

// Up to N ranges to leave out, kept sorted by start; they may overlap.
template <std::size_t N>
class excluded_ranges {
public:
    constexpr bool full() const noexcept { return count_ == N; }
    constexpr std::size_t size() const noexcept { return count_; }

    constexpr void add(virt_range r) noexcept {
        Expects(!full());
        // Insertion from the end; `i < N` is known from the Expects, but
        // said again for GCC, whose -Warray-bounds does not see it at N = 1.
        std::size_t i = count_;
        for (; i > 0 && i < N && r.start() < ranges_[i - 1].start(); --i) ranges_[i] = ranges_[i - 1];
        ranges_[i] = r;
        ++count_;
    }

    // The parts of `w` outside every excluded range, ascending: N ranges cut
    // a window into at most N + 1 parts.
    constexpr range_parts<N + 1> parts_of(virt_range w) const noexcept {
        range_parts<N + 1> out;
        virt_addr from = w.start();
        bool open = true;  // [from, w.last()] may still hold something
        for (std::size_t i = 0; i < count_ && open; ++i) {
            const virt_range& x = ranges_[i];
            if (x.last() < from || x.start() > w.last()) continue;
            if (from < x.start()) out.part[out.count++] = virt_range::from_bounds(from, x.start() - 1);
            // x.last() + 1 cannot wrap here: x ending at 2^64 - 1 ends past w too.
            if (x.last() >= w.last()) open = false;
            else from = x.last() + 1;
        }
        if (open) out.part[out.count++] = virt_range::from_bounds(from, w.last());
        return out;
    }

private:
    virt_range ranges_[N]{};
    std::size_t count_ = 0;
};

}  // namespace asreloc
