// A fixed pool of physical frames with its free map inside the object: the
// freestanding frame allocator a small kernel (or a test) hands to a backend.
// No heap; allocation is a scan of a bitmap word by word.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include <gsl/assert>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"

namespace asreloc {

// Frames [base, base + count * 4 KiB); at most MaxFrames of them.
template <std::size_t MaxFrames>
class frame_pool {
public:
    constexpr frame_pool(phys_addr base, std::size_t count) noexcept : base_(base), count_(count) {
        Expects(base.is_aligned(page_size::size_4k) && count <= MaxFrames);
        for (std::size_t i = count; i < words * 64; ++i) set(i);  // frames past count never exist
    }

    constexpr result<phys_addr> allocate_frame() noexcept {
        for (std::size_t w = hint_; w < words; ++w) {
            if (used_[w] == ~std::uint64_t{0}) continue;
            const auto i = w * 64 + static_cast<std::size_t>(std::countr_one(used_[w]));
            set(i);
            hint_ = w;
            ++allocated_;
            return base_ + i * page_bytes;
        }
        return failure(error::out_of_frames);
    }

    constexpr void deallocate_frame(phys_addr f) noexcept {
        Expects(owns(f) && test(index_of(f)));
        const auto i = index_of(f);
        used_[i / 64] &= ~(std::uint64_t{1} << (i % 64));
        if (i / 64 < hint_) hint_ = i / 64;
        --allocated_;
    }

    constexpr bool owns(phys_addr f) const noexcept {
        return f >= base_ && f.is_aligned(page_size::size_4k) && index_of(f) < count_;
    }
    constexpr bool is_allocated(phys_addr f) const noexcept { return owns(f) && test(index_of(f)); }
    constexpr std::size_t free_count() const noexcept { return count_ - allocated_; }
    constexpr std::size_t allocated_count() const noexcept { return allocated_; }
    constexpr std::size_t capacity() const noexcept { return count_; }
    constexpr phys_addr base() const noexcept { return base_; }

private:
    static constexpr std::size_t words = (MaxFrames + 63) / 64;

    constexpr std::size_t index_of(phys_addr f) const noexcept { return (f - base_) / page_bytes; }
    constexpr bool test(std::size_t i) const noexcept { return (used_[i / 64] >> (i % 64)) & 1; }
    constexpr void set(std::size_t i) noexcept { used_[i / 64] |= std::uint64_t{1} << (i % 64); }

    std::uint64_t used_[words]{};
    phys_addr base_;
    std::size_t count_;
    std::size_t allocated_ = 0;
    std::size_t hint_ = 0;
};

}  // namespace asreloc
