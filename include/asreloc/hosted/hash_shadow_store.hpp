// The hosted shadow store: displaced guest pages in an absl::node_hash_map, so
// the capacity is a limit the embedder picks, not storage it provides. Nodes
// never move, so pointers from original() stay valid until that page is erased.
// Like the pool store it keeps the 4 KiB piece of the original mapping.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/policy/shadow_store.hpp"

namespace asreloc::hosted {

struct shadow_key_hash {
    std::size_t operator()(const shadow_key& k) const noexcept {
        return absl::HashOf(k.space, k.page.value());
    }
};

class hash_shadow_store {
public:
    // Per page beyond its 4 KiB copy: the node's key and mapping, the table's
    // pointer to the node and its control byte (allocator headers not counted).
    static constexpr std::size_t bookkeeping_bytes_per_page = sizeof(shadow_key) + sizeof(mapping) + sizeof(void*) + 1;

    explicit hash_shadow_store(std::size_t capacity) : capacity_(capacity) { pages_.reserve(capacity); }

    status insert(shadow_key key, const mapping& original, std::span<const std::byte> content) {
        mapping piece;
        if (!key.page.is_aligned(page_size::size_4k) || content.size() != page_bytes ||
            !page_piece_of(original, key.page, piece))
            return failure(error::misaligned);
        if (pages_.contains(key)) return failure(error::overlaps);
        if (pages_.size() == capacity_) return failure(error::shadow_store_full);
        auto& page = pages_[key];
        page.original = piece;
        std::memcpy(page.bytes.data(), content.data(), page_bytes);
        return {};
    }

    status erase(shadow_key key) { return pages_.erase(key) == 1 ? status{} : failure(error::not_mapped); }

    const mapping* original(shadow_key key) const {
        auto it = pages_.find(key);
        return it == pages_.end() ? nullptr : &it->second.original;
    }

    status read(shadow_key key, std::uint64_t offset, std::span<std::byte> out) const {
        auto it = pages_.find(key);
        if (it == pages_.end()) return failure(error::not_mapped);
        if (!within_page(offset, out.size())) return failure(error::out_of_bounds);
        if (!out.empty()) std::memcpy(out.data(), it->second.bytes.data() + offset, out.size());
        return {};
    }

    status write(shadow_key key, std::uint64_t offset, std::span<const std::byte> in) {
        auto it = pages_.find(key);
        if (it == pages_.end()) return failure(error::not_mapped);
        if (!within_page(offset, in.size())) return failure(error::out_of_bounds);
        if (!in.empty()) std::memcpy(it->second.bytes.data() + offset, in.data(), in.size());
        return {};
    }

    std::size_t size() const noexcept { return pages_.size(); }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    struct shadow_page {
        mapping original;
        std::array<std::byte, page_bytes> bytes;
    };

    static constexpr bool within_page(std::uint64_t offset, std::size_t n) noexcept {
        return offset <= page_bytes && n <= page_bytes - offset;
    }

    absl::node_hash_map<shadow_key, shadow_page, shadow_key_hash> pages_;
    std::size_t capacity_;
};

static_assert(shadow_store<hash_shadow_store>);

}  // namespace asreloc::hosted
