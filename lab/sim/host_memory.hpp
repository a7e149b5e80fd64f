// Physical memory for the lab's guest and monitor spaces: one host reservation
// (MAP_NORESERVE, so untouched frames cost nothing) reached through the
// library's offset_phys_map. Page-table and stub frames come from a frame
// allocator over its first part; guest pages are backed by an alias area
// after it (guest address modulo the area size), because the lab replays the
// guest's mappings, not its data: a displaced page is still really copied
// into the shadow store and back.
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

namespace asreloc::lab {

class host_memory {
public:
    // Non-zero and high, so a phys/virt mix-up shows.
    static constexpr std::uint64_t phys_base = std::uint64_t{1} << 40;
    static constexpr std::uint64_t guest_alias_bytes = std::uint64_t{256} << 20;

    explicit host_memory(std::size_t table_frames = std::size_t{1} << 20)
        : table_frames_(table_frames), bytes_(table_frames * page_bytes + guest_alias_bytes) {
        void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::perror("asreloc-lab: host_memory mmap");
            std::abort();
        }
        base_ = static_cast<std::byte*>(p);
    }
    host_memory(const host_memory&) = delete;
    host_memory& operator=(const host_memory&) = delete;
    ~host_memory() { ::munmap(base_, bytes_); }

    // The frame_allocator concept (tables and stub frames).
    result<phys_addr> allocate_frame() noexcept {
        if (!free_.empty()) {
            const phys_addr f = free_.back();
            free_.pop_back();
            ++in_use_;
            return f;
        }
        if (next_ == table_frames_) return failure(error::out_of_frames);
        ++in_use_;
        return phys_addr{phys_base + (next_++) * page_bytes};
    }
    // `n` physically consecutive frames (the stub's IDT and GDT/TSS pages are
    // one object), always fresh from the top of the pool.
    result<phys_addr> allocate_consecutive(std::size_t n) noexcept {
        if (n == 0 || table_frames_ - next_ < n) return failure(error::out_of_frames);
        const phys_addr first{phys_base + next_ * page_bytes};
        next_ += n;
        in_use_ += n;
        return first;
    }
    void deallocate_frame(phys_addr f) noexcept {
        free_.push_back(f);
        --in_use_;
    }

    offset_phys_map map() const noexcept { return offset_phys_map{reinterpret_cast<std::uintptr_t>(base_) - phys_base}; }

    // The guest frame behind guest page `va` and how many bytes from it are
    // consecutive in the alias area (a guest mapping is cut where it wraps).
    phys_addr guest_frame(std::uint64_t va) const noexcept {
        return phys_addr{alias_base() + (va & ~(page_bytes - 1)) % guest_alias_bytes};
    }
    std::uint64_t guest_run(std::uint64_t va) const noexcept {
        return guest_alias_bytes - (va & ~(page_bytes - 1)) % guest_alias_bytes;
    }

    std::size_t frames_in_use() const noexcept { return in_use_; }

private:
    std::uint64_t alias_base() const noexcept { return phys_base + table_frames_ * page_bytes; }

    std::size_t table_frames_;
    std::size_t bytes_;
    std::byte* base_ = nullptr;
    std::size_t next_ = 0;
    std::size_t in_use_ = 0;
    std::vector<phys_addr> free_;
};

}  // namespace asreloc::lab
