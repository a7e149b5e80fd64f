// Virtual and physical addresses, page sizes and ranges: the vocabulary every
// layer speaks. Addresses are types, not integers, so a physical address cannot
// be passed where a virtual one is meant.
#pragma once

#include <bit>
#include <compare>
#include <cstdint>

#include "asreloc/core/result.hpp"

namespace asreloc {

// The page sizes of x86-64 paging (SDM vol. 3A, 4.5). A backend that lacks one
// answers error::unsupported_page_size.
enum class page_size : std::uint64_t {
    size_4k = std::uint64_t{1} << 12,
    size_2m = std::uint64_t{1} << 21,
    size_1g = std::uint64_t{1} << 30,
};

constexpr std::uint64_t bytes(page_size s) noexcept { return static_cast<std::uint64_t>(s); }
constexpr unsigned shift(page_size s) noexcept {
    return static_cast<unsigned>(std::countr_zero(bytes(s)));
}

inline constexpr std::uint64_t page_bytes = bytes(page_size::size_4k);

// Type-level page sizes, so a 2 MiB page cannot be built from a 4 KiB aligned
// address by accident: page<size_2m>::at(va) checks once, then it is proven.
struct size_4k {
    static constexpr page_size value = page_size::size_4k;
};
struct size_2m {
    static constexpr page_size value = page_size::size_2m;
};
struct size_1g {
    static constexpr page_size value = page_size::size_1g;
};

constexpr bool is_aligned(std::uint64_t v, std::uint64_t alignment) noexcept {
    return (v & (alignment - 1)) == 0;
}
constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t alignment) noexcept {
    return v & ~(alignment - 1);
}

// A linear (virtual) address. It may hold any 64-bit value: which values are
// canonical depends on the paging mode of the space it is used in (48 bits for
// 4-level paging, 57 for 5-level), so the space checks it and answers
// error::non_canonical.
class virt_addr {
public:
    constexpr virt_addr() noexcept = default;
    constexpr explicit virt_addr(std::uint64_t v) noexcept : value_(v) {}

    constexpr std::uint64_t value() const noexcept { return value_; }

    // Canonical for a space with `width` significant bits: bits 63..width-1
    // all equal (SDM vol. 3A, 3.3.7.1).
    constexpr bool is_canonical(unsigned width) const noexcept {
        const auto high = static_cast<std::int64_t>(value_) >> (width - 1);
        return high == 0 || high == -1;
    }
    constexpr bool is_aligned(page_size s) const noexcept { return asreloc::is_aligned(value_, bytes(s)); }
    constexpr virt_addr align_down(page_size s) const noexcept {
        return virt_addr{asreloc::align_down(value_, bytes(s))};
    }
    constexpr std::uint64_t page_offset(page_size s) const noexcept { return value_ & (bytes(s) - 1); }

    constexpr virt_addr operator+(std::uint64_t n) const noexcept { return virt_addr{value_ + n}; }
    constexpr virt_addr operator-(std::uint64_t n) const noexcept { return virt_addr{value_ - n}; }
    constexpr std::uint64_t operator-(virt_addr o) const noexcept { return value_ - o.value_; }
    constexpr auto operator<=>(const virt_addr&) const noexcept = default;

private:
    std::uint64_t value_ = 0;
};

// A physical address; at most 52 bits on x86-64 (MAXPHYADDR, SDM vol. 3A, 4.1.4).
class phys_addr {
public:
    static constexpr unsigned max_width = 52;

    constexpr phys_addr() noexcept = default;
    constexpr explicit phys_addr(std::uint64_t v) noexcept : value_(v) {}

    constexpr std::uint64_t value() const noexcept { return value_; }
    constexpr bool is_valid() const noexcept { return (value_ >> max_width) == 0; }
    constexpr bool is_aligned(page_size s) const noexcept { return asreloc::is_aligned(value_, bytes(s)); }

    constexpr phys_addr operator+(std::uint64_t n) const noexcept { return phys_addr{value_ + n}; }
    constexpr std::uint64_t operator-(phys_addr o) const noexcept { return value_ - o.value_; }
    constexpr auto operator<=>(const phys_addr&) const noexcept = default;

private:
    std::uint64_t value_ = 0;
};

// A non-empty range of virtual addresses, kept as first and last (inclusive) so
// that a range ending at the top of the 64-bit space needs no overflowing end.
class virt_range {
public:
    // Ranges are built through the checked factories or from proven bounds.
    constexpr virt_range() noexcept = default;

    static constexpr virt_range from_bounds(virt_addr first, virt_addr last) noexcept {
        return virt_range{first, last};
    }
    // `size` must be non-zero and the range must not wrap past 2^64 - 1.
    static constexpr result<virt_range> make(virt_addr start, std::uint64_t size) noexcept {
        if (size == 0) return failure(error::empty_range);
        if (start.value() + (size - 1) < start.value()) return failure(error::non_canonical);
        return virt_range{start, start + (size - 1)};
    }
    // For sizes the caller has already proven non-zero and in range.
    static constexpr virt_range of(virt_addr start, std::uint64_t size) noexcept {
        return virt_range{start, start + (size - 1)};
    }
    // Every address of the 64-bit linear space.
    static constexpr virt_range everything() noexcept {
        return virt_range{virt_addr{0}, virt_addr{~std::uint64_t{0}}};
    }

    constexpr virt_addr start() const noexcept { return first_; }
    constexpr virt_addr last() const noexcept { return last_; }
    // The size in bytes; 0 for the whole 2^64 space, which is the only range too
    // large to have a 64-bit size.
    constexpr std::uint64_t size() const noexcept { return last_ - first_ + 1; }
    // One past the last byte; wraps to 0 for a range that ends at 2^64 - 1.
    constexpr virt_addr end() const noexcept { return last_ + 1; }

    constexpr bool contains(virt_addr a) const noexcept { return first_ <= a && a <= last_; }
    constexpr bool contains(const virt_range& o) const noexcept { return first_ <= o.first_ && o.last_ <= last_; }
    constexpr bool overlaps(const virt_range& o) const noexcept { return first_ <= o.last_ && o.first_ <= last_; }
    // Both ends lie on `s` boundaries (start aligned, size a multiple of `s`).
    constexpr bool is_aligned(page_size s) const noexcept {
        return first_.is_aligned(s) && (last_ + 1).is_aligned(s);
    }

    constexpr bool operator==(const virt_range&) const noexcept = default;

private:
    constexpr virt_range(virt_addr first, virt_addr last) noexcept : first_(first), last_(last) {}

    virt_addr first_{};
    virt_addr last_{};
};

// The overlap of two ranges, when they overlap.
struct range_overlap {
    bool any;
    virt_range range;
};
constexpr range_overlap intersect(const virt_range& a, const virt_range& b) noexcept {
    if (!a.overlaps(b)) return {false, {}};
    const auto first = a.start() < b.start() ? b.start() : a.start();
    const auto last = a.last() < b.last() ? a.last() : b.last();
    return {true, virt_range::from_bounds(first, last)};
}

// A virtual page of a size known at compile time; only aligned ones exist.
template <class Size>
class page {
public:
    static constexpr page_size size = Size::value;

    static constexpr result<page> at(virt_addr start) noexcept {
        if (!start.is_aligned(size)) return failure(error::misaligned);
        return page{start};
    }
    static constexpr page containing(virt_addr a) noexcept { return page{a.align_down(size)}; }

    constexpr virt_addr start() const noexcept { return start_; }
    constexpr virt_range range() const noexcept { return virt_range::of(start_, bytes(size)); }
    constexpr auto operator<=>(const page&) const noexcept = default;

private:
    constexpr explicit page(virt_addr start) noexcept : start_(start) {}
    virt_addr start_;
};

// A physical frame of a size known at compile time; only aligned ones exist.
template <class Size>
class frame {
public:
    static constexpr page_size size = Size::value;

    static constexpr result<frame> at(phys_addr start) noexcept {
        if (!start.is_aligned(size)) return failure(error::misaligned);
        return frame{start};
    }
    static constexpr frame containing(phys_addr a) noexcept {
        return frame{phys_addr{align_down(a.value(), bytes(size))}};
    }

    constexpr phys_addr start() const noexcept { return start_; }
    constexpr auto operator<=>(const frame&) const noexcept = default;

private:
    constexpr explicit frame(phys_addr start) noexcept : start_(start) {}
    phys_addr start_;
};

}  // namespace asreloc
