// The freestanding shadow store: displaced guest pages kept in caller-provided
// page slots, found through a sorted index in caller-provided storage (binary
// search, no heap). Free slots are chained through their own first bytes, so
// the only bookkeeping is the index entry.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/policy/shadow_store.hpp"

namespace asreloc {

// One page of shadow content. Callers give an array of them (aligned as they
// like; page alignment helps if they ever map the slots).
struct page_slot {
    std::byte bytes[page_bytes];
};

// One index entry per kept page: 40 bytes. The key's page is the kept
// mapping's start (stores keep the 4 KiB piece, see page_piece_of), so it is
// not stored twice.
struct shadow_entry {
    mapping original;
    std::uint32_t space = 0;
    std::uint32_t slot = 0;

    constexpr shadow_key key() const noexcept { return {space, original.start}; }
};

// Capacity = min(slots.size(), index.size()); the storage must outlive the
// store. insert() also refuses (misaligned) an original mapping that does not
// cover key.page; original() answers the 4 KiB piece of it. Pointers from original() stay valid until the next insert or erase
// (the index is kept sorted, so entries move).
// Cost: lookups O(log n); insert/erase O(n) entry moves (entries are small,
// the 4 KiB page copy dominates for the capacities a stub needs).
class pool_shadow_store {
public:
    // Bookkeeping per kept page beyond its 4 KiB copy: the index entry.
    static constexpr std::size_t bookkeeping_bytes_per_page = sizeof(shadow_entry);

    pool_shadow_store(std::span<page_slot> slots, std::span<shadow_entry> index) noexcept
        : slots_(slots), index_(index), capacity_(std::min(slots.size(), index.size())) {
        Expects(capacity_ < no_slot);
        for (std::size_t i = 0; i < capacity_; ++i) set_next_free(static_cast<std::uint32_t>(i),
                                                                   i + 1 < capacity_ ? static_cast<std::uint32_t>(i + 1)
                                                                                     : no_slot);
        free_head_ = capacity_ > 0 ? 0 : no_slot;
    }

    status insert(shadow_key key, const mapping& original, std::span<const std::byte> content) noexcept {
        mapping piece;
        if (!key.page.is_aligned(page_size::size_4k) || content.size() != page_bytes ||
            !page_piece_of(original, key.page, piece))
            return failure(error::misaligned);
        const std::size_t at = lower_bound(key);
        if (at < size_ && index_[at].key() == key) return failure(error::overlaps);
        if (size_ == capacity_) return failure(error::shadow_store_full);
        const std::uint32_t slot = free_head_;
        free_head_ = next_free(slot);
        std::memcpy(slots_[slot].bytes, content.data(), page_bytes);
        for (std::size_t i = size_; i > at; --i) index_[i] = index_[i - 1];
        index_[at] = shadow_entry{piece, key.space, slot};
        ++size_;
        return {};
    }

    status erase(shadow_key key) noexcept {
        const std::size_t at = find(key);
        if (at == size_) return failure(error::not_mapped);
        const std::uint32_t slot = index_[at].slot;
        for (std::size_t i = at; i + 1 < size_; ++i) index_[i] = index_[i + 1];
        --size_;
        set_next_free(slot, free_head_);
        free_head_ = slot;
        return {};
    }

    const mapping* original(shadow_key key) const noexcept {
        const std::size_t at = find(key);
        return at == size_ ? nullptr : &index_[at].original;
    }

    status read(shadow_key key, std::uint64_t offset, std::span<std::byte> out) const noexcept {
        const std::size_t at = find(key);
        if (at == size_) return failure(error::not_mapped);
        if (!within_page(offset, out.size())) return failure(error::out_of_bounds);
        if (!out.empty()) std::memcpy(out.data(), slots_[index_[at].slot].bytes + offset, out.size());
        return {};
    }

    status write(shadow_key key, std::uint64_t offset, std::span<const std::byte> in) noexcept {
        const std::size_t at = find(key);
        if (at == size_) return failure(error::not_mapped);
        if (!within_page(offset, in.size())) return failure(error::out_of_bounds);
        if (!in.empty()) std::memcpy(slots_[index_[at].slot].bytes + offset, in.data(), in.size());
        return {};
    }

    std::size_t size() const noexcept { return size_; }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    static constexpr std::uint32_t no_slot = ~std::uint32_t{0};

    std::size_t lower_bound(shadow_key key) const noexcept {
        std::size_t lo = 0, hi = size_;
        while (lo < hi) {
            const std::size_t mid = lo + (hi - lo) / 2;
            if (index_[mid].key() < key) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }
    std::size_t find(shadow_key key) const noexcept {
        const std::size_t at = lower_bound(key);
        return at < size_ && index_[at].key() == key ? at : size_;
    }

    // A free slot's first four bytes name the next free slot.
    std::uint32_t next_free(std::uint32_t slot) const noexcept {
        std::uint32_t next;
        std::memcpy(&next, slots_[slot].bytes, sizeof next);
        return next;
    }
    void set_next_free(std::uint32_t slot, std::uint32_t next) noexcept {
        std::memcpy(slots_[slot].bytes, &next, sizeof next);
    }

    std::span<page_slot> slots_;
    std::span<shadow_entry> index_;
    std::size_t capacity_ = 0;
    std::size_t size_ = 0;
    std::uint32_t free_head_ = no_slot;
};

static_assert(shadow_store<pool_shadow_store>);

}  // namespace asreloc
