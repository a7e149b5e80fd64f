// Physical memory for the benchmarks: page-table frames carved from one large
// host reservation, reached through the library's offset_phys_map. Many guest
// layouts (tens of thousands of tables for the x86-64 guest kernels) share it.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/phys_map.hpp"

namespace asreloc::bench {

class host_frames {
public:
    // Physical addresses start high and non-zero so a phys/virt mix-up shows.
    static constexpr std::uint64_t phys_base = std::uint64_t{1} << 36;

    explicit host_frames(std::size_t max_frames) : max_frames_(max_frames) {
        void* p = ::mmap(nullptr, max_frames * page_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::perror("host_frames: mmap");
            std::abort();
        }
        base_ = static_cast<std::byte*>(p);
    }
    host_frames(const host_frames&) = delete;
    host_frames& operator=(const host_frames&) = delete;
    ~host_frames() { ::munmap(base_, max_frames_ * page_bytes); }

    // The frame_allocator concept.
    result<phys_addr> allocate_frame() noexcept {
        if (!free_.empty()) {
            const phys_addr f = free_.back();
            free_.pop_back();
            ++in_use_;
            return f;
        }
        if (next_ == max_frames_) return failure(error::out_of_frames);
        ++in_use_;
        return phys_addr{phys_base + (next_++) * page_bytes};
    }
    void deallocate_frame(phys_addr f) noexcept {
        free_.push_back(f);
        --in_use_;
    }

    offset_phys_map map() const noexcept {
        return offset_phys_map{reinterpret_cast<std::uintptr_t>(base_) - phys_base};
    }
    // Whether p is one of these frames (leaf frames of the built layouts are not).
    bool owns(phys_addr p) const noexcept {
        return p.value() >= phys_base && p.value() < phys_base + max_frames_ * page_bytes;
    }
    std::size_t in_use() const noexcept { return in_use_; }

private:
    std::byte* base_ = nullptr;
    std::size_t max_frames_;
    std::size_t next_ = 0;
    std::size_t in_use_ = 0;
    std::vector<phys_addr> free_;
};

}  // namespace asreloc::bench
