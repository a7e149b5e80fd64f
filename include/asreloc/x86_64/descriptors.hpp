// The x86-64 system structures the stub carries: 64-bit IDT gates, the GDT's
// code/data and 16-byte TSS descriptors, the 64-bit TSS and the LGDT/LIDT
// pseudo-descriptor images. Constexpr value types whose bytes are exactly the
// architectural format, with field accessors in the SDM's names.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace asreloc::x86_64 {

namespace detail {
constexpr std::uint64_t bits(std::uint64_t word, unsigned low, unsigned width) noexcept {
    return (word >> low) & ((std::uint64_t{1} << width) - 1);
}
constexpr std::uint64_t with_bits(std::uint64_t word, unsigned low, unsigned width, std::uint64_t value) noexcept {
    const std::uint64_t mask = ((std::uint64_t{1} << width) - 1) << low;
    return (word & ~mask) | ((value << low) & mask);
}
}  // namespace detail

// Descriptor privilege level / requested privilege level: 0 (most privileged) .. 3.
enum class privilege_level : std::uint8_t { ring0 = 0, ring1 = 1, ring2 = 2, ring3 = 3 };

// A segment selector: index into the GDT (bits 15:3), TI (bit 2), RPL (bits 1:0).
// SDM vol. 3A, 3.4.2, Figure 3-6.
struct segment_selector {
    std::uint16_t value = 0;

    static constexpr segment_selector gdt(std::uint16_t index, privilege_level rpl = privilege_level::ring0) noexcept {
        return segment_selector{static_cast<std::uint16_t>((index << 3) | static_cast<std::uint16_t>(rpl))};
    }
    constexpr std::uint16_t index() const noexcept { return static_cast<std::uint16_t>(value >> 3); }
    constexpr bool table_indicator() const noexcept { return (value & 0x4) != 0; }
    constexpr privilege_level rpl() const noexcept { return static_cast<privilege_level>(value & 0x3); }
    constexpr bool operator==(const segment_selector&) const noexcept = default;
};

// System-segment and gate types valid in IA-32e mode. SDM vol. 3A, 3.5, Table 3-2.
enum class system_type : std::uint8_t {
    ldt = 0x2,
    tss_available = 0x9,
    tss_busy = 0xB,
    call_gate = 0xC,
    interrupt_gate = 0xE,
    trap_gate = 0xF,
};

// ---------------------------------------------------------------------------
// 64-bit IDT gate, 16 bytes. SDM vol. 3A, 6.14.1, Figure 6-8:
//   low  word: offset 15:0 (15:0), segment selector (31:16), IST (34:32),
//              type (43:40), 0 (44), DPL (46:45), P (47), offset 31:16 (63:48)
//   high word: offset 63:32 (31:0), reserved (63:32)
struct idt_gate {
    std::uint64_t low = 0;
    std::uint64_t high = 0;

    static constexpr idt_gate make(std::uint64_t offset, segment_selector selector, system_type type,
                                   privilege_level dpl = privilege_level::ring0, std::uint8_t ist = 0) noexcept {
        idt_gate g;
        g.set_offset(offset);
        g.set_selector(selector);
        g.set_type(type);
        g.set_dpl(dpl);
        g.set_ist(ist);
        g.set_present(true);
        return g;
    }

    constexpr std::uint64_t offset() const noexcept {
        return detail::bits(low, 0, 16) | (detail::bits(low, 48, 16) << 16) | (detail::bits(high, 0, 32) << 32);
    }
    constexpr void set_offset(std::uint64_t offset) noexcept {
        low = detail::with_bits(low, 0, 16, offset & 0xFFFF);
        low = detail::with_bits(low, 48, 16, (offset >> 16) & 0xFFFF);
        high = detail::with_bits(high, 0, 32, offset >> 32);
    }
    constexpr segment_selector selector() const noexcept {
        return segment_selector{static_cast<std::uint16_t>(detail::bits(low, 16, 16))};
    }
    constexpr void set_selector(segment_selector s) noexcept { low = detail::with_bits(low, 16, 16, s.value); }
    // 0: no stack switch by IST; 1..7: load RSP from TSS.IST1..7 (6.14.5).
    constexpr std::uint8_t ist() const noexcept { return static_cast<std::uint8_t>(detail::bits(low, 32, 3)); }
    constexpr void set_ist(std::uint8_t ist) noexcept { low = detail::with_bits(low, 32, 3, ist); }
    constexpr system_type type() const noexcept { return static_cast<system_type>(detail::bits(low, 40, 4)); }
    constexpr void set_type(system_type t) noexcept {
        low = detail::with_bits(low, 40, 4, static_cast<std::uint64_t>(t));
    }
    constexpr privilege_level dpl() const noexcept { return static_cast<privilege_level>(detail::bits(low, 45, 2)); }
    constexpr void set_dpl(privilege_level d) noexcept {
        low = detail::with_bits(low, 45, 2, static_cast<std::uint64_t>(d));
    }
    constexpr bool present() const noexcept { return detail::bits(low, 47, 1) != 0; }
    constexpr void set_present(bool p) noexcept { low = detail::with_bits(low, 47, 1, p ? 1 : 0); }

    constexpr bool operator==(const idt_gate&) const noexcept = default;
};
static_assert(sizeof(idt_gate) == 16 && std::is_trivially_copyable_v<idt_gate>);

// The IDT holds at most 256 gates; vector n sits at byte 16 * n.
inline constexpr std::size_t idt_vectors = 256;
using idt = std::array<idt_gate, idt_vectors>;
static_assert(sizeof(idt) == 4096);

// ---------------------------------------------------------------------------
// 8-byte code/data segment descriptor. SDM vol. 3A, 3.4.5, Figure 3-8:
//   limit 15:0 (15:0), base 15:0 (31:16), base 23:16 (39:32), type (43:40),
//   S (44), DPL (46:45), P (47), limit 19:16 (51:48), AVL (52), L (53),
//   D/B (54), G (55), base 31:24 (63:56).
// In 64-bit mode base and limit are ignored for CS/DS/ES/SS; L=1 with D=0
// makes a 64-bit code segment (3.4.5.1).
struct segment_descriptor {
    std::uint64_t raw = 0;

    // Code/data type bits (S = 1), SDM vol. 3A, 3.4.5.1, Table 3-1.
    static constexpr std::uint8_t type_accessed = 0x1;
    static constexpr std::uint8_t type_data_writable = 0x2;
    static constexpr std::uint8_t type_code_readable = 0x2;
    static constexpr std::uint8_t type_code = 0x8;

    static constexpr segment_descriptor null() noexcept { return {}; }
    // Flat 64-bit code: base 0, limit 0xFFFFF, G, L, execute/read, accessed.
    static constexpr segment_descriptor code64(privilege_level dpl) noexcept {
        return flat(type_code | type_code_readable | type_accessed, dpl, true);
    }
    // Flat data: base 0, limit 0xFFFFF, G, D/B, read/write, accessed.
    static constexpr segment_descriptor data(privilege_level dpl) noexcept {
        return flat(type_data_writable | type_accessed, dpl, false);
    }

    constexpr std::uint32_t base() const noexcept {
        return static_cast<std::uint32_t>(detail::bits(raw, 16, 24) | (detail::bits(raw, 56, 8) << 24));
    }
    constexpr void set_base(std::uint32_t base) noexcept {
        raw = detail::with_bits(raw, 16, 24, base & 0xFFFFFF);
        raw = detail::with_bits(raw, 56, 8, base >> 24);
    }
    constexpr std::uint32_t limit() const noexcept {
        return static_cast<std::uint32_t>(detail::bits(raw, 0, 16) | (detail::bits(raw, 48, 4) << 16));
    }
    constexpr void set_limit(std::uint32_t limit) noexcept {
        raw = detail::with_bits(raw, 0, 16, limit & 0xFFFF);
        raw = detail::with_bits(raw, 48, 4, (limit >> 16) & 0xF);
    }
    constexpr std::uint8_t type() const noexcept { return static_cast<std::uint8_t>(detail::bits(raw, 40, 4)); }
    constexpr void set_type(std::uint8_t t) noexcept { raw = detail::with_bits(raw, 40, 4, t); }
    constexpr bool descriptor_type() const noexcept { return detail::bits(raw, 44, 1) != 0; }  // S
    constexpr void set_descriptor_type(bool s) noexcept { raw = detail::with_bits(raw, 44, 1, s ? 1 : 0); }
    constexpr privilege_level dpl() const noexcept { return static_cast<privilege_level>(detail::bits(raw, 45, 2)); }
    constexpr void set_dpl(privilege_level d) noexcept {
        raw = detail::with_bits(raw, 45, 2, static_cast<std::uint64_t>(d));
    }
    constexpr bool present() const noexcept { return detail::bits(raw, 47, 1) != 0; }
    constexpr void set_present(bool p) noexcept { raw = detail::with_bits(raw, 47, 1, p ? 1 : 0); }
    constexpr bool available() const noexcept { return detail::bits(raw, 52, 1) != 0; }  // AVL
    constexpr void set_available(bool a) noexcept { raw = detail::with_bits(raw, 52, 1, a ? 1 : 0); }
    constexpr bool long_mode() const noexcept { return detail::bits(raw, 53, 1) != 0; }  // L
    constexpr void set_long_mode(bool l) noexcept { raw = detail::with_bits(raw, 53, 1, l ? 1 : 0); }
    constexpr bool default_size() const noexcept { return detail::bits(raw, 54, 1) != 0; }  // D/B
    constexpr void set_default_size(bool d) noexcept { raw = detail::with_bits(raw, 54, 1, d ? 1 : 0); }
    constexpr bool granularity() const noexcept { return detail::bits(raw, 55, 1) != 0; }  // G
    constexpr void set_granularity(bool g) noexcept { raw = detail::with_bits(raw, 55, 1, g ? 1 : 0); }

    constexpr bool operator==(const segment_descriptor&) const noexcept = default;

private:
    static constexpr segment_descriptor flat(std::uint8_t type, privilege_level dpl, bool code64) noexcept {
        segment_descriptor d;
        d.set_limit(0xFFFFF);
        d.set_type(type);
        d.set_descriptor_type(true);
        d.set_dpl(dpl);
        d.set_present(true);
        d.set_long_mode(code64);
        d.set_default_size(!code64);  // L=1 requires D=0
        d.set_granularity(true);
        return d;
    }
};
static_assert(sizeof(segment_descriptor) == 8 && std::is_trivially_copyable_v<segment_descriptor>);

// ---------------------------------------------------------------------------
// 16-byte TSS descriptor in the GDT (IA-32e mode). SDM vol. 3A, 7.2.3, Figure 7-4:
//   low  word: as an 8-byte descriptor with S = 0 and type 9 (available) / 0xB (busy)
//   high word: base 63:32 (31:0), reserved (39:32), zero (44:40), reserved (63:45)
// It occupies two GDT slots; the selector names the first.
struct tss_descriptor {
    std::uint64_t low = 0;
    std::uint64_t high = 0;

    // limit is the TSS size minus one (103 for a TSS without I/O bitmap), byte granular.
    static constexpr tss_descriptor make(std::uint64_t base, std::uint32_t limit,
                                         privilege_level dpl = privilege_level::ring0) noexcept {
        tss_descriptor d;
        d.set_base(base);
        d.set_limit(limit);
        d.set_type(system_type::tss_available);
        d.set_dpl(dpl);
        d.set_present(true);
        return d;
    }

    constexpr std::uint64_t base() const noexcept {
        return detail::bits(low, 16, 24) | (detail::bits(low, 56, 8) << 24) | (detail::bits(high, 0, 32) << 32);
    }
    constexpr void set_base(std::uint64_t base) noexcept {
        low = detail::with_bits(low, 16, 24, base & 0xFFFFFF);
        low = detail::with_bits(low, 56, 8, (base >> 24) & 0xFF);
        high = detail::with_bits(high, 0, 32, base >> 32);
    }
    constexpr std::uint32_t limit() const noexcept {
        return static_cast<std::uint32_t>(detail::bits(low, 0, 16) | (detail::bits(low, 48, 4) << 16));
    }
    constexpr void set_limit(std::uint32_t limit) noexcept {
        low = detail::with_bits(low, 0, 16, limit & 0xFFFF);
        low = detail::with_bits(low, 48, 4, (limit >> 16) & 0xF);
    }
    constexpr system_type type() const noexcept { return static_cast<system_type>(detail::bits(low, 40, 4)); }
    constexpr void set_type(system_type t) noexcept {
        low = detail::with_bits(low, 40, 4, static_cast<std::uint64_t>(t));
    }
    // LTR marks the descriptor busy (type 0xB); loading it again needs it available.
    constexpr bool busy() const noexcept { return type() == system_type::tss_busy; }
    constexpr privilege_level dpl() const noexcept { return static_cast<privilege_level>(detail::bits(low, 45, 2)); }
    constexpr void set_dpl(privilege_level d) noexcept {
        low = detail::with_bits(low, 45, 2, static_cast<std::uint64_t>(d));
    }
    constexpr bool present() const noexcept { return detail::bits(low, 47, 1) != 0; }
    constexpr void set_present(bool p) noexcept { low = detail::with_bits(low, 47, 1, p ? 1 : 0); }
    constexpr bool available() const noexcept { return detail::bits(low, 52, 1) != 0; }  // AVL
    constexpr void set_available(bool a) noexcept { low = detail::with_bits(low, 52, 1, a ? 1 : 0); }
    constexpr bool granularity() const noexcept { return detail::bits(low, 55, 1) != 0; }  // G
    constexpr void set_granularity(bool g) noexcept { low = detail::with_bits(low, 55, 1, g ? 1 : 0); }

    constexpr bool operator==(const tss_descriptor&) const noexcept = default;
};
static_assert(sizeof(tss_descriptor) == 16 && std::is_trivially_copyable_v<tss_descriptor>);

// ---------------------------------------------------------------------------
// The 64-bit TSS, 104 bytes. SDM vol. 3A, 7.7, Figure 7-11. The SDM places
// RSP0 at byte 4, so the 64-bit fields are not naturally aligned: the struct
// is packed, and its members are read and assigned by value (never bind a
// reference or pointer to one).
struct [[gnu::packed]] task_state_segment {
    std::uint32_t reserved0 = 0;
    std::uint64_t rsp[3] = {};  // RSP0..RSP2: stacks for a privilege change to ring 0..2
    std::uint64_t reserved1 = 0;
    std::uint64_t ist[7] = {};  // IST1..IST7 at ist[0]..ist[6]
    std::uint64_t reserved2 = 0;
    std::uint16_t reserved3 = 0;
    std::uint16_t io_map_base = 0;  // offset of the I/O permission bitmap from the TSS base

    constexpr bool operator==(const task_state_segment&) const noexcept = default;
};
static_assert(sizeof(task_state_segment) == 104);
static_assert(offsetof(task_state_segment, rsp) == 4);
static_assert(offsetof(task_state_segment, reserved1) == 28);
static_assert(offsetof(task_state_segment, ist) == 36);
static_assert(offsetof(task_state_segment, reserved2) == 92);
static_assert(offsetof(task_state_segment, io_map_base) == 102);
static_assert(std::is_trivially_copyable_v<task_state_segment> && std::is_standard_layout_v<task_state_segment>);

// A TSS with no I/O permission bitmap: a map base at or past the limit denies
// every port to CPL > IOPL (vol. 1, "I/O Permission Bit Map").
inline constexpr std::uint16_t tss_no_io_bitmap = sizeof(task_state_segment);
inline constexpr std::uint32_t tss_limit = sizeof(task_state_segment) - 1;

// ---------------------------------------------------------------------------
// The 10-byte memory operand of LGDT/LIDT (and SGDT/SIDT) in 64-bit mode:
// 16-bit limit (table size in bytes minus one), then the 64-bit linear base.
// SDM vol. 3A, 2.4.1 and 2.4.3, Figure 2-6.
struct [[gnu::packed]] pseudo_descriptor {
    std::uint16_t limit = 0;
    std::uint64_t base = 0;

    constexpr bool operator==(const pseudo_descriptor&) const noexcept = default;
};
static_assert(sizeof(pseudo_descriptor) == 10);
static_assert(offsetof(pseudo_descriptor, limit) == 0 && offsetof(pseudo_descriptor, base) == 2);

constexpr pseudo_descriptor table_register(std::uint64_t base, std::size_t table_bytes) noexcept {
    return pseudo_descriptor{static_cast<std::uint16_t>(table_bytes - 1), base};
}

}  // namespace asreloc::x86_64
