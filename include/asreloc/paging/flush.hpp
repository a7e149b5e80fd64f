// The TLB-invalidation token that every page-table change returns. It names the
// precise range whose translations changed; the caller applies it (or batches
// several, or says explicitly that it ignores it) so no invalidation is ever
// forgotten silently.
#pragma once

#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/paging/tlb.hpp"

namespace asreloc {

class [[nodiscard]] flush {
public:
    // Nothing to invalidate: e.g. a map into not-present entries, which the
    // TLB cannot have cached (SDM vol. 3A, 4.10.4.3).
    static constexpr flush none() noexcept { return flush{}; }
    static constexpr flush of(virt_range r) noexcept { return flush{r}; }

    constexpr bool empty() const noexcept { return !any_; }
    constexpr virt_range range() const noexcept { return range_; }

    // Issue the invalidation: one page by its address, anything larger as a range.
    template <tlb Tlb>
    constexpr void apply(Tlb& t) const noexcept {
        if (!any_) return;
        if (range_.size() == page_bytes) t.invalidate_page(range_.start());
        else t.invalidate_range(range_);
    }
    // The caller takes responsibility, e.g. the space is not loaded on any CPU.
    constexpr void ignore() const noexcept {}

    // Grow to cover `other` too (the smallest range covering both).
    constexpr flush& merge(const flush& other) noexcept {
        if (!other.any_) return *this;
        if (!any_) return *this = other;
        const auto first = range_.start() < other.range_.start() ? range_.start() : other.range_.start();
        const auto last = range_.last() < other.range_.last() ? other.range_.last() : range_.last();
        range_ = virt_range::from_bounds(first, last);
        return *this;
    }

    constexpr bool operator==(const flush&) const noexcept = default;

private:
    constexpr flush() noexcept = default;
    constexpr explicit flush(virt_range r) noexcept : range_(r), any_(true) {}

    virt_range range_{};
    bool any_ = false;
};

// The flushes of one operation (a relocation touches the old placement, the
// new one, and maybe a victim leaf by leaf) issued once at the end. Ranges that
// overlap or touch are merged, so a range changed leaf by leaf costs one
// invalidation and nothing outside the changed ranges is invalidated; past
// Capacity separate ranges it degrades to one whole-space flush.
template <unsigned Capacity = 8>
class flush_batch {
public:
    constexpr void add(const flush& f) noexcept {
        if (f.empty() || overflowed_) return;
        const virt_range r = f.range();
        for (unsigned i = 0; i < count_; ++i) {
            if (touches(ranges_[i], r)) {
                ranges_[i] = hull(ranges_[i], r);
                return;
            }
        }
        if (count_ == Capacity) overflowed_ = true;
        else ranges_[count_++] = r;
    }
    template <tlb Tlb>
    constexpr void apply(Tlb& t) noexcept {
        if (overflowed_) t.invalidate_all();
        else
            for (unsigned i = 0; i < count_; ++i) flush::of(ranges_[i]).apply(t);
        clear();
    }
    constexpr void clear() noexcept {
        count_ = 0;
        overflowed_ = false;
    }
    constexpr unsigned size() const noexcept { return count_; }
    constexpr bool overflowed() const noexcept { return overflowed_; }
    constexpr const virt_range& operator[](unsigned i) const noexcept { return ranges_[i]; }

private:
    // Overlapping, or one starting right after the other ends: their hull is
    // their union. A range ending at 2^64 - 1 is followed by nothing (its
    // end() wraps to 0). A hull may come to touch another kept range; both
    // stay, which invalidates their common part twice and nothing more.
    static constexpr bool touches(const virt_range& a, const virt_range& b) noexcept {
        return a.overlaps(b) || just_after(a, b) || just_after(b, a);
    }
    static constexpr bool just_after(const virt_range& a, const virt_range& b) noexcept {
        return a.last().value() != ~std::uint64_t{0} && a.end() == b.start();
    }
    static constexpr virt_range hull(const virt_range& a, const virt_range& b) noexcept {
        return virt_range::from_bounds(a.start() < b.start() ? a.start() : b.start(),
                                       a.last() < b.last() ? b.last() : a.last());
    }

    virt_range ranges_[Capacity]{};
    unsigned count_ = 0;
    bool overflowed_ = false;
};

}  // namespace asreloc
