// The format of a paging-structure entry in 4-level and 5-level paging, and its
// translation to and from asreloc's neutral attributes.
// SDM vol. 3A, 4.5, Tables 4-14 to 4-20 (PML5E, PML4E, PDPTE, PDE, PTE).
#pragma once

#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/x86_64/paging_mode.hpp"

namespace asreloc::x86_64 {

namespace bits {
inline constexpr std::uint64_t present = std::uint64_t{1} << 0;
inline constexpr std::uint64_t read_write = std::uint64_t{1} << 1;
inline constexpr std::uint64_t user_supervisor = std::uint64_t{1} << 2;
inline constexpr std::uint64_t page_write_through = std::uint64_t{1} << 3;
inline constexpr std::uint64_t page_cache_disable = std::uint64_t{1} << 4;
inline constexpr std::uint64_t accessed = std::uint64_t{1} << 5;
inline constexpr std::uint64_t dirty = std::uint64_t{1} << 6;            // leaves only
inline constexpr std::uint64_t page_size = std::uint64_t{1} << 7;        // PDE / PDPTE: maps a page
inline constexpr std::uint64_t pat_4k = std::uint64_t{1} << 7;           // PTE: the PAT bit
inline constexpr std::uint64_t global = std::uint64_t{1} << 8;           // leaves only
inline constexpr std::uint64_t pat_large = std::uint64_t{1} << 12;       // 2 MiB / 1 GiB leaves
inline constexpr unsigned protection_key_shift = 59;                     // leaves only, 62:59
inline constexpr std::uint64_t protection_key = std::uint64_t{0xf} << protection_key_shift;
inline constexpr std::uint64_t execute_disable = std::uint64_t{1} << 63;  // needs IA32_EFER.NXE = 1
// Physical-address bits M-1:12 with the architectural maximum M = 52 (4.1.4).
inline constexpr std::uint64_t address = 0x000f'ffff'ffff'f000;
// Ignored by the processor in every leaf (11:9 and 58:52): an OS keeps its own
// bookkeeping there (Linux: _PAGE_SPECIAL, soft-dirty, ...), so a split or a
// protect of a guest's page carries them over.
inline constexpr std::uint64_t software = 0x07f0'0000'0000'0e00;
}  // namespace bits

// The physical-address field of a leaf of `level`: 51:12, 51:21 or 51:30. The
// bits between 12 and the page offset hold PAT (bit 12) or are reserved.
constexpr std::uint64_t leaf_address_mask(unsigned level) noexcept {
    return bits::address & ~(entry_span(level) - 1);
}

// One 64-bit entry. Whether it is a leaf depends on its level: a PTE always
// maps a page, a PDE/PDPTE when PS = 1, a PML4E/PML5E never.
class entry {
public:
    constexpr entry() noexcept = default;
    constexpr explicit entry(std::uint64_t raw) noexcept : raw_(raw) {}

    constexpr std::uint64_t raw() const noexcept { return raw_; }

    constexpr bool present() const noexcept { return test(bits::present); }
    constexpr bool read_write() const noexcept { return test(bits::read_write); }
    constexpr bool user_supervisor() const noexcept { return test(bits::user_supervisor); }
    constexpr bool page_write_through() const noexcept { return test(bits::page_write_through); }
    constexpr bool page_cache_disable() const noexcept { return test(bits::page_cache_disable); }
    constexpr bool accessed() const noexcept { return test(bits::accessed); }
    constexpr bool dirty() const noexcept { return test(bits::dirty); }
    constexpr bool global() const noexcept { return test(bits::global); }
    constexpr bool execute_disable() const noexcept { return test(bits::execute_disable); }
    constexpr unsigned protection_key() const noexcept {
        return static_cast<unsigned>((raw_ & bits::protection_key) >> bits::protection_key_shift);
    }

    constexpr bool is_leaf(unsigned level) const noexcept {
        return level == 1 || ((level == 2 || level == 3) && test(bits::page_size));
    }
    constexpr bool pat(unsigned level) const noexcept { return test(level == 1 ? bits::pat_4k : bits::pat_large); }

    // The frame of a leaf, or the next table of a non-leaf entry.
    constexpr phys_addr leaf_address(unsigned level) const noexcept {
        return phys_addr{raw_ & leaf_address_mask(level)};
    }
    constexpr phys_addr table_address() const noexcept { return phys_addr{raw_ & bits::address}; }

    // PAT:PCD:PWT, the index into IA32_PAT (SDM vol. 3A, 13.12.3).
    constexpr std::uint8_t memory_type(unsigned level) const noexcept {
        return static_cast<std::uint8_t>((page_write_through() ? 1 : 0) | (page_cache_disable() ? 2 : 0) |
                                         (pat(level) ? 4 : 0));
    }
    // The attributes this entry grants on its own (a leaf's; see effective_rights).
    constexpr attributes leaf_attributes(unsigned level) const noexcept {
        return attributes{.writable = read_write(),
                          .user = user_supervisor(),
                          .executable = !execute_disable(),
                          .global = global(),
                          .memory_type = memory_type(level),
                          .protection_key = static_cast<std::uint8_t>(protection_key())};
    }

    constexpr entry with(std::uint64_t set) const noexcept { return entry{raw_ | set}; }
    constexpr entry without(std::uint64_t clear) const noexcept { return entry{raw_ & ~clear}; }
    constexpr bool operator==(const entry&) const noexcept = default;

private:
    constexpr bool test(std::uint64_t bit) const noexcept { return (raw_ & bit) != 0; }
    std::uint64_t raw_ = 0;
};

constexpr bool encodable(const attributes& a) noexcept { return a.memory_type <= 7 && a.protection_key <= 15; }

// The leaf entry of `level` mapping the page at `frame` with `a` (which must be
// encodable). PS is set in PDEs and PDPTEs; PAT goes to bit 7 or bit 12.
constexpr entry make_leaf(unsigned level, phys_addr frame, const attributes& a, bool accessed = false,
                          bool dirty = false) noexcept {
    std::uint64_t raw = bits::present | (frame.value() & leaf_address_mask(level));
    if (a.writable) raw |= bits::read_write;
    if (a.user) raw |= bits::user_supervisor;
    if (a.memory_type & 1) raw |= bits::page_write_through;
    if (a.memory_type & 2) raw |= bits::page_cache_disable;
    if (a.memory_type & 4) raw |= level == 1 ? bits::pat_4k : bits::pat_large;
    if (level > 1) raw |= bits::page_size;
    if (a.global) raw |= bits::global;
    raw |= std::uint64_t{a.protection_key} << bits::protection_key_shift;
    if (!a.executable) raw |= bits::execute_disable;
    if (accessed) raw |= bits::accessed;
    if (dirty) raw |= bits::dirty;
    return entry{raw};
}

// Piece `i` of the large leaf `big` at `level`, one level down: every bit of
// `big` but its address kept (software bits and A/D included), with PS cleared
// and PAT moved from bit 12 to bit 7 when the piece is a PTE.
constexpr entry piece_of(entry big, unsigned level, unsigned i) noexcept {
    const unsigned small = level - 1;
    const std::uint64_t frame = big.leaf_address(level).value() + std::uint64_t{i} * entry_span(small);
    std::uint64_t raw = big.raw() & ~bits::address;  // PAT(12) lies inside the address field
    if (small == 1) raw &= ~bits::page_size;
    if (big.pat(level)) raw |= small == 1 ? bits::pat_4k : bits::pat_large;
    return entry{raw | (frame & leaf_address_mask(small))};
}

// The leaf at `level` + 1 that the leaf `first` at `level` and its 511
// successors fold into (the inverse of piece_of), with the A and D given.
constexpr entry whole_of(entry first, unsigned level, bool accessed, bool dirty) noexcept {
    std::uint64_t raw = first.raw() & ~(bits::address | bits::accessed | bits::dirty);
    if (level == 1) raw = (raw & ~bits::pat_4k) | bits::page_size;
    if (first.pat(level)) raw |= bits::pat_large;
    if (accessed) raw |= bits::accessed;
    if (dirty) raw |= bits::dirty;
    return entry{raw | (first.leaf_address(level).value() & leaf_address_mask(level + 1))};
}

// The entry the backend writes to reference a table: present, writable,
// user-accessible, executable, write-back, so that the leaf alone decides
// access rights (as Linux does; SDM 4.6 ANDs rights along the walk).
constexpr entry make_table_entry(phys_addr table) noexcept {
    return entry{bits::present | bits::read_write | bits::user_supervisor | (table.value() & bits::address)};
}
constexpr bool is_permissive_table_entry(entry e) noexcept {
    return e.read_write() && e.user_supervisor() && !e.execute_disable();
}

// Rights combine along the walk (SDM vol. 3A, 4.6): writable and user only if
// every entry allows it, executable unless any entry sets XD.
struct effective_rights {
    bool writable = true;
    bool user = true;
    bool executable = true;

    constexpr effective_rights through(entry e) const noexcept {
        return {writable && e.read_write(), user && e.user_supervisor(), executable && !e.execute_disable()};
    }
    constexpr attributes apply_to(attributes a) const noexcept {
        a.writable = a.writable && writable;
        a.user = a.user && user;
        a.executable = a.executable && executable;
        return a;
    }
};

}  // namespace asreloc::x86_64
