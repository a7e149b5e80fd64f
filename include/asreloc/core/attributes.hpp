// Architecture-neutral page attributes. Policies and the manager speak only in
// these; a backend (x86_64/) alone knows how they become entry bits.
#pragma once

#include <cstdint>

namespace asreloc {

// What a mapping allows and how it is cached. Reads are implied by presence:
// every mapped page is readable (true of x86 and of most MMUs).
struct attributes {
    bool writable = false;
    bool user = false;        // reachable from the deprivileged guest (x86: U/S = 1)
    bool executable = false;  // x86: XD = 0
    bool global = false;      // survives an address-space switch (x86: G)
    // Index of the memory type, 0..7. On x86-64 it is the PAT index
    // PAT:PCD:PWT (bit 2 = PAT, bit 1 = PCD, bit 0 = PWT) into IA32_PAT
    // (SDM vol. 3A, 13.12.3); 0 is write-back with the power-on PAT.
    std::uint8_t memory_type = 0;
    std::uint8_t protection_key = 0;  // 0..15 (x86: bits 62:59 of a leaf entry)

    constexpr bool operator==(const attributes&) const noexcept = default;
};

// Convenient starting points; adjust fields with designated initializers.
inline constexpr attributes read_only{};
inline constexpr attributes read_write{.writable = true};
inline constexpr attributes user_read_write{.writable = true, .user = true};

// The accessed and dirty bits the CPU sets as it walks (SDM vol. 3A, 4.8).
enum class ad_bits : std::uint8_t {
    none = 0,
    accessed = 1,
    dirty = 2,
    both = 3,
};
constexpr ad_bits operator|(ad_bits a, ad_bits b) noexcept {
    return static_cast<ad_bits>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr bool has(ad_bits set, ad_bits bit) noexcept {
    return (static_cast<std::uint8_t>(set) & static_cast<std::uint8_t>(bit)) != 0;
}

}  // namespace asreloc
