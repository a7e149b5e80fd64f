// Simulated physical memory for host tests: a frame pool over a buffer of real
// host pages, and a phys map that reaches them. Physical addresses start at an
// arbitrary non-zero base so that a phys/virt mix-up shows.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "asreloc/paging/frame_allocator.hpp"
#include "asreloc/paging/frame_pool.hpp"
#include "asreloc/paging/phys_map.hpp"

namespace asreloc::test {

template <std::size_t Frames>
class sim_memory {
public:
    static constexpr phys_addr base{0x4000'0000};

    sim_memory() : bytes_(static_cast<std::byte*>(std::aligned_alloc(page_bytes, Frames * page_bytes))) {
        // Garbage, not zeroes: a backend must zero the tables it allocates.
        std::memset(bytes_.get(), 0xa5, Frames * page_bytes);
    }

    frame_pool<Frames>& frames() noexcept { return pool_; }
    const frame_pool<Frames>& frames() const noexcept { return pool_; }

    // The phys map (concept asreloc::phys_map).
    std::byte* to_virt(phys_addr p) const noexcept { return bytes_.get() + (p - base); }

    bool contains(phys_addr p) const noexcept { return p >= base && (p - base) < Frames * page_bytes; }

private:
    struct free_deleter {
        void operator()(std::byte* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<std::byte, free_deleter> bytes_;
    frame_pool<Frames> pool_{base, Frames};
};

// Wraps an allocator and fails the N-th allocation (0-based) with
// out_of_frames: for injecting an allocation failure at every point of an
// operation and checking that nothing changed and nothing leaked.
template <frame_allocator Inner>
class failing_allocator {
public:
    explicit failing_allocator(Inner& inner) noexcept : inner_(&inner) {}

    void fail_at(long n) noexcept {
        fail_at_ = n;
        calls_ = 0;
    }
    void never_fail() noexcept { fail_at_ = -1; }
    long calls() const noexcept { return calls_; }

    result<phys_addr> allocate_frame() noexcept {
        if (calls_++ == fail_at_) return failure(error::out_of_frames);
        return inner_->allocate_frame();
    }
    void deallocate_frame(phys_addr f) noexcept { inner_->deallocate_frame(f); }

private:
    Inner* inner_;
    long fail_at_ = -1;
    long calls_ = 0;
};

}  // namespace asreloc::test
