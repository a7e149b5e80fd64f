// The hosted shadow store: displaced guest pages on the heap, so the capacity
// is a limit the embedder picks, not storage it provides. Like the pool store
// it keeps the 4 KiB piece of the original mapping. Built to stay within 1 %
// of the copies: page copies and their mappings sit in chunks of 16 slots, and
// each guest space keeps its pages in an Abseil B-tree of 4-byte slot numbers
// ordered by page. (Until 2026-11-26 it was hash_shadow_store, after its
// first version, a node hash map of whole pages: 2 % over the copies.)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <gsl/assert>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/policy/shadow_store.hpp"

namespace asreloc::hosted {

// Capacity up to 2^32 - 1 pages. original() pointers stay valid until that
// page is erased (slots never move). Memory follows use: chunks are allocated
// as slots are first needed and all released when the store empties; an
// erased slot is reused before a new one. Lookups: O(log spaces) for the
// space, then O(log n) in its B-tree. std::bad_alloc propagates, and leaves
// the store as it was (B-trees, because Abseil's hash tables of this era set
// their new capacity before allocating it, so a failed rehash breaks them).
class heap_shadow_store {
public:
    // Slots per chunk: a power of two, and small enough that a chunk (16 page
    // copies and their mappings, 66 KiB) comes from the heap, not from mmap.
    static constexpr std::size_t chunk_slots = 16;
    // Per page beyond its 4 KiB copy, at least: the mapping and the slot
    // number in the B-tree (B-tree nodes run part empty, chunks and the
    // chunk directory add about 1.5 B more).
    static constexpr std::size_t bookkeeping_bytes_per_page = sizeof(mapping) + sizeof(std::uint32_t);

    explicit heap_shadow_store(std::size_t capacity) : capacity_(capacity), slots_(std::make_unique<slab>(capacity)) {
        Expects(capacity < no_slot);
    }

    status insert(shadow_key key, const mapping& original, std::span<const std::byte> content) {
        mapping piece;
        if (!key.page.is_aligned(page_size::size_4k) || content.size() != page_bytes ||
            !page_piece_of(original, key.page, piece))
            return failure(error::misaligned);
        if (find(key) != no_slot) return failure(error::overlaps);
        if (size_ == capacity_) return failure(error::shadow_store_full);

        // A throw from an allocation below leaves the store as it was: the
        // guard gives the slot back and drops a space it added.
        const std::uint32_t slot = slots_->take();
        undo_insert undo{*this, key.space, slot};
        auto [space, created] = spaces_.try_emplace(key.space, page_order{slots_.get()});
        undo.drop_space = created;
        slots_->original(slot) = piece;
        std::memcpy(slots_->page(slot), content.data(), page_bytes);
        space->second.insert(slot);
        undo.armed = false;
        ++size_;
        return {};
    }

    status erase(shadow_key key) {
        auto space = spaces_.find(key.space);
        if (space == spaces_.end()) return failure(error::not_mapped);
        auto it = space->second.find(key.page);
        if (it == space->second.end()) return failure(error::not_mapped);
        const std::uint32_t slot = *it;
        space->second.erase(it);
        if (space->second.empty()) spaces_.erase(space);
        slots_->give_back(slot);
        if (--size_ == 0) slots_->release();
        return {};
    }

    const mapping* original(shadow_key key) const {
        const std::uint32_t slot = find(key);
        return slot == no_slot ? nullptr : &slots_->original(slot);
    }

    status read(shadow_key key, std::uint64_t offset, std::span<std::byte> out) const {
        const std::uint32_t slot = find(key);
        if (slot == no_slot) return failure(error::not_mapped);
        if (!within_page(offset, out.size())) return failure(error::out_of_bounds);
        if (!out.empty()) std::memcpy(out.data(), slots_->page(slot) + offset, out.size());
        return {};
    }

    status write(shadow_key key, std::uint64_t offset, std::span<const std::byte> in) {
        const std::uint32_t slot = find(key);
        if (slot == no_slot) return failure(error::not_mapped);
        if (!within_page(offset, in.size())) return failure(error::out_of_bounds);
        if (!in.empty()) std::memcpy(slots_->page(slot) + offset, in.data(), in.size());
        return {};
    }

    std::size_t size() const noexcept { return size_; }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    static constexpr std::uint32_t no_slot = ~std::uint32_t{0};

    // The slots: chunk i holds slots [16 i, 16 i + 16) as their 16 mappings
    // followed by their page copies, in one allocation; the last chunk has
    // only as many pages as the capacity leaves. Free slots are chained
    // through their page's first four bytes. Its own heap object, so the
    // B-trees' comparators can point at it while the store moves.
    class slab {
    public:
        explicit slab(std::size_t capacity) noexcept : capacity_(capacity) {}

        std::byte* page(std::uint32_t slot) const noexcept {
            return chunks_[slot / chunk_slots].get() + mappings_bytes + (slot % chunk_slots) * page_bytes;
        }
        mapping& original(std::uint32_t slot) const noexcept {
            return reinterpret_cast<mapping*>(chunks_[slot / chunk_slots].get())[slot % chunk_slots];
        }

        // A free slot: an erased one, else the next one never used (a new
        // chunk every 16).
        std::uint32_t take() {
            if (free_head_ != no_slot) {
                const std::uint32_t slot = free_head_;
                std::memcpy(&free_head_, page(slot), sizeof free_head_);
                return slot;
            }
            if (next_ % chunk_slots == 0) add_chunk();
            return next_++;
        }
        void give_back(std::uint32_t slot) noexcept {
            std::memcpy(page(slot), &free_head_, sizeof free_head_);
            free_head_ = slot;
        }
        void release() noexcept {
            chunks_.clear();
            chunks_.shrink_to_fit();
            free_head_ = no_slot;
            next_ = 0;
        }

    private:
        static constexpr std::size_t mappings_bytes = chunk_slots * sizeof(mapping);
        static_assert(mappings_bytes % alignof(std::max_align_t) == 0 && alignof(mapping) <= alignof(std::max_align_t));

        void add_chunk() {
            const std::size_t pages = std::min<std::size_t>(chunk_slots, capacity_ - next_);
            std::unique_ptr<std::byte[]> chunk{new std::byte[mappings_bytes + pages * page_bytes]};
            auto* mappings = reinterpret_cast<mapping*>(chunk.get());
            for (std::size_t i = 0; i < chunk_slots; ++i) ::new (static_cast<void*>(mappings + i)) mapping{};
            chunks_.push_back(std::move(chunk));
        }

        std::size_t capacity_;
        std::vector<std::unique_ptr<std::byte[]>> chunks_;
        std::uint32_t free_head_ = no_slot;
        std::uint32_t next_ = 0;  // slots [0, next_) have been handed out at least once
    };

    // Orders a space's slots by the page they keep; transparent, so a page
    // looks itself up without a slot.
    struct page_order {
        using is_transparent = void;
        const slab* slots;

        bool operator()(std::uint32_t a, std::uint32_t b) const noexcept { return page_of(a) < page_of(b); }
        bool operator()(std::uint32_t a, virt_addr b) const noexcept { return page_of(a) < b; }
        bool operator()(virt_addr a, std::uint32_t b) const noexcept { return a < page_of(b); }
        virt_addr page_of(std::uint32_t slot) const noexcept { return slots->original(slot).start; }
    };
    using page_index = absl::btree_set<std::uint32_t, page_order>;

    // Puts a half-done insert back when an allocation throws.
    struct undo_insert {
        heap_shadow_store& store;
        std::uint32_t space;
        std::uint32_t slot;
        bool drop_space = false;
        bool armed = true;
        ~undo_insert() {
            if (!armed) return;
            store.slots_->give_back(slot);
            if (drop_space) store.spaces_.erase(space);
            if (store.size_ == 0) store.slots_->release();
        }
    };

    std::uint32_t find(shadow_key key) const {
        auto space = spaces_.find(key.space);
        if (space == spaces_.end()) return no_slot;
        auto it = space->second.find(key.page);
        return it == space->second.end() ? no_slot : *it;
    }

    std::size_t capacity_;
    std::size_t size_ = 0;
    std::unique_ptr<slab> slots_;
    absl::btree_map<std::uint32_t, page_index> spaces_;
};

static_assert(shadow_store<heap_shadow_store>);

}  // namespace asreloc::hosted
