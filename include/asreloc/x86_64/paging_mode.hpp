// 4-level and 5-level paging (SDM vol. 3A, 4.5): how many levels a walk has,
// how wide the canonical addresses are, and which bits of a linear address
// index each level.
#pragma once

#include <cstdint>

namespace asreloc::x86_64 {

enum class paging_mode : std::uint8_t {
    four_level,  // CR4.LA57 = 0: PML4 -> PDPT -> PD -> PT, 48-bit linear addresses
    five_level,  // CR4.LA57 = 1: PML5 on top, 57-bit linear addresses
};

// Levels are numbered as the walk goes up: 1 = page table (maps 4 KiB pages),
// 2 = page directory (2 MiB), 3 = page-directory-pointer table (1 GiB),
// 4 = PML4, 5 = PML5.
constexpr unsigned levels(paging_mode m) noexcept { return m == paging_mode::four_level ? 4 : 5; }
constexpr unsigned width(paging_mode m) noexcept { return m == paging_mode::four_level ? 48 : 57; }

inline constexpr unsigned entries_per_table = 512;

// Bits of the linear address translated below an entry of `level`.
constexpr unsigned level_shift(unsigned level) noexcept { return 12 + 9 * (level - 1); }
// Bytes one entry of `level` maps.
constexpr std::uint64_t entry_span(unsigned level) noexcept { return std::uint64_t{1} << level_shift(level); }
// The entry of a `level` table that translates `va`.
constexpr unsigned table_index(std::uint64_t va, unsigned level) noexcept {
    return static_cast<unsigned>((va >> level_shift(level)) & (entries_per_table - 1));
}

constexpr const char* level_name(unsigned level) noexcept {
    switch (level) {
    case 1: return "PT";
    case 2: return "PD";
    case 3: return "PDPT";
    case 4: return "PML4";
    case 5: return "PML5";
    }
    return "?";
}

// The linear address bits 63..width-1 repeat bit width-1 (canonical form).
constexpr std::uint64_t sign_extend(std::uint64_t va, unsigned address_width) noexcept {
    const unsigned unused = 64 - address_width;
    return static_cast<std::uint64_t>(static_cast<std::int64_t>(va << unused) >> unused);
}

}  // namespace asreloc::x86_64
