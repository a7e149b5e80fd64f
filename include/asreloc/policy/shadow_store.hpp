// The shadow-store policy: monitor-space copies of the guest pages a victim
// placement displaced. Each copy remembers the guest mapping it came from, so
// the page can be served to an instruction emulator while displaced and put
// back when the stub leaves.
#pragma once

#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/phys_map.hpp"

namespace asreloc {

// A displaced 4 KiB page: which guest space, which page.
struct shadow_key {
    std::uint32_t space = 0;
    virt_addr page;

    constexpr auto operator<=>(const shadow_key&) const noexcept = default;
};

// insert(key, original, content)
//   Keep a copy of one displaced 4 KiB page (content.size() == 4096) and the
//   4 KiB guest mapping it had. Errors: shadow_store_full, overlaps (key is
//   already shadowed), misaligned (key.page not 4 KiB aligned or content not
//   one page). On error nothing is kept.
// erase(key)
//   Forget the page. Errors: not_mapped (not shadowed).
// original(key)
//   The guest mapping the page had, or nullptr when it is not shadowed.
// read(key, offset, out) / write(key, offset, in)
//   Bytes [offset, offset + size) of the page copy, for emulating a guest
//   access. Errors: not_mapped, out_of_bounds (past the end of the page).
// size() / capacity()
//   Pages kept now / pages it can keep at most.
template <class S>
concept shadow_store = requires(S& s, const S& cs, shadow_key k, const mapping& m, std::span<const std::byte> in,
                                std::span<std::byte> out, std::uint64_t offset) {
    { s.insert(k, m, in) } -> std::same_as<status>;
    { s.erase(k) } -> std::same_as<status>;
    { cs.original(k) } -> std::same_as<const mapping*>;
    { cs.read(k, offset, out) } -> std::same_as<status>;
    { s.write(k, offset, in) } -> std::same_as<status>;
    { cs.size() } -> std::same_as<std::size_t>;
    { cs.capacity() } -> std::same_as<std::size_t>;
};

// Whether bytes [offset, offset + n) lie inside one page copy: the stores'
// out_of_bounds check for read and write, without overflow.
constexpr bool within_page(std::uint64_t offset, std::size_t n) noexcept {
    return offset <= page_bytes && n <= page_bytes - offset;
}

// The 4 KiB piece of `original` that holds `page`: what a store keeps when the
// displaced page sat inside a large page, so restore_content writes the right
// 4 KiB frame. False when `original` does not cover `page` (a caller error the
// stores answer with misaligned).
constexpr bool page_piece_of(const mapping& original, virt_addr page, mapping& out) noexcept {
    if (!original.range().contains(virt_range::of(page, page_bytes))) return false;
    out = original;
    out.start = page;
    out.phys = original.phys + (page - original.start);
    out.size = page_size::size_4k;
    return true;
}

// Put a displaced page's content back into the guest frame it came from (the
// caller remaps the guest mapping) and forget the copy.
template <shadow_store Store, phys_map Map>
status restore_content(Store& store, shadow_key key, const Map& memory) {
    const mapping* original = store.original(key);
    if (original == nullptr) return failure(error::not_mapped);
    std::span<std::byte> frame{memory.to_virt(original->phys), page_bytes};
    if (auto r = store.read(key, 0, frame); !r) return r;
    return store.erase(key);
}

}  // namespace asreloc
