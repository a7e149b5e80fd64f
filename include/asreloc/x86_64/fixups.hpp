// Built-in fixups for the x86-64 structures the stub carries: IDT gate offsets,
// the GDT's TSS descriptor base, the GDTR/IDTR images and the TSS stack
// pointers. Each follows the contract of manager/fixup.hpp.
//
// Which values move: a value points into the stub when it lies in the stub's
// old placement [from, from + stub_size). Stack pointers (RSP0-2, IST1-7) are
// stack *tops*, so for them the window is (from, from + stub_size]: a stack at
// the very end of the stub has its top at from + stub_size, and a zero
// (unused) slot never moves. Gates that are not present are ignored: the CPU
// never reads their offset. Everything else is left alone.
//
// Exact reversal: a fixup refuses (error::fixup_refused, nothing written) when
// a value that does not move already lies in the new placement's window,
// because the reverse move could not tell it from a moved one. Once a move is
// accepted, apply(to, from) moves back exactly the values it moved and
// restores every byte.
//
// The targets are the stub's structures as the monitor writes them; the CPU
// keeps copies in GDTR, IDTR and TR, so after a relocation the embedder
// reloads them (LGDT, LIDT, and LTR after clearing the TSS descriptor's busy
// type).
#pragma once

#include <cstddef>
#include <cstdint>

#include <gsl/assert>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/manager/fixup.hpp"
#include "asreloc/x86_64/descriptors.hpp"

namespace asreloc::x86_64 {

namespace detail {

// The stub's old and new placement for one apply() call.
struct stub_move {
    std::uint64_t from;
    std::uint64_t to;
    std::uint64_t size;

    // [base, base + size), without overflow at the top of the address space.
    constexpr bool in_window(std::uint64_t base, std::uint64_t v) const noexcept { return v - base < size; }
    // (base, base + size]: for stack tops.
    constexpr bool in_top_window(std::uint64_t base, std::uint64_t v) const noexcept {
        return v - base - 1 < size;
    }
    constexpr std::uint64_t relocated(std::uint64_t v) const noexcept { return v - from + to; }
};

enum class window_kind : std::uint8_t { address, stack_top };

constexpr bool moves(const stub_move& m, window_kind k, std::uint64_t v) noexcept {
    return k == window_kind::address ? m.in_window(m.from, v) : m.in_top_window(m.from, v);
}
// A value that stays but sits where moved values land would make the reverse
// move ambiguous.
constexpr bool blocks(const stub_move& m, window_kind k, std::uint64_t v) noexcept {
    if (moves(m, k, v)) return false;
    return k == window_kind::address ? m.in_window(m.to, v) : m.in_top_window(m.to, v);
}
constexpr std::uint64_t moved(const stub_move& m, window_kind k, std::uint64_t v) noexcept {
    return moves(m, k, v) ? m.relocated(v) : v;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// One fixup for a whole IDT: every present gate whose handler lies in the stub.
struct idt_fixup_context {
    idt_gate* gates = nullptr;
    std::size_t count = 0;  // gates in the table (<= idt_vectors)
    std::uint64_t stub_size = 0;
};

inline status relocate_idt(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<idt_fixup_context*>(context);
    Expects(c.gates != nullptr && c.count <= idt_vectors);
    const detail::stub_move m{from.value(), to.value(), c.stub_size};
    constexpr auto k = detail::window_kind::address;
    for (std::size_t i = 0; i < c.count; ++i) {
        if (c.gates[i].present() && detail::blocks(m, k, c.gates[i].offset())) return failure(error::fixup_refused);
    }
    for (std::size_t i = 0; i < c.count; ++i) {
        if (c.gates[i].present()) c.gates[i].set_offset(detail::moved(m, k, c.gates[i].offset()));
    }
    return {};
}
inline fixup idt_fixup(idt_fixup_context& context) noexcept { return fixup{&relocate_idt, &context}; }

// ---------------------------------------------------------------------------
// The base of the GDT's 16-byte TSS descriptor, when the TSS lies in the stub.
// The type (available or busy) is kept as found.
struct tss_descriptor_fixup_context {
    tss_descriptor* descriptor = nullptr;
    std::uint64_t stub_size = 0;
};

inline status relocate_tss_descriptor(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<tss_descriptor_fixup_context*>(context);
    Expects(c.descriptor != nullptr);
    const detail::stub_move m{from.value(), to.value(), c.stub_size};
    constexpr auto k = detail::window_kind::address;
    const std::uint64_t base = c.descriptor->base();
    if (detail::blocks(m, k, base)) return failure(error::fixup_refused);
    c.descriptor->set_base(detail::moved(m, k, base));
    return {};
}
inline fixup tss_descriptor_fixup(tss_descriptor_fixup_context& context) noexcept {
    return fixup{&relocate_tss_descriptor, &context};
}

// ---------------------------------------------------------------------------
// The base of an LGDT/LIDT image (the limit never changes).
struct table_register_fixup_context {
    pseudo_descriptor* image = nullptr;
    std::uint64_t stub_size = 0;
};

inline status relocate_table_register(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<table_register_fixup_context*>(context);
    Expects(c.image != nullptr);
    const detail::stub_move m{from.value(), to.value(), c.stub_size};
    constexpr auto k = detail::window_kind::address;
    const std::uint64_t base = c.image->base;
    if (detail::blocks(m, k, base)) return failure(error::fixup_refused);
    c.image->base = detail::moved(m, k, base);
    return {};
}
inline fixup table_register_fixup(table_register_fixup_context& context) noexcept {
    return fixup{&relocate_table_register, &context};
}

// ---------------------------------------------------------------------------
// RSP0-2 and IST1-7 of a 64-bit TSS: those whose stack top lies in the stub.
struct tss_stacks_fixup_context {
    task_state_segment* tss = nullptr;
    std::uint64_t stub_size = 0;
};

inline status relocate_tss_stacks(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<tss_stacks_fixup_context*>(context);
    Expects(c.tss != nullptr);
    const detail::stub_move m{from.value(), to.value(), c.stub_size};
    constexpr auto k = detail::window_kind::stack_top;
    // Work on a copy, by index: the TSS is packed, so its members cannot be
    // bound to references.
    task_state_segment t = *c.tss;
    for (std::size_t i = 0; i < 3; ++i) {
        if (detail::blocks(m, k, t.rsp[i])) return failure(error::fixup_refused);
    }
    for (std::size_t i = 0; i < 7; ++i) {
        if (detail::blocks(m, k, t.ist[i])) return failure(error::fixup_refused);
    }
    for (std::size_t i = 0; i < 3; ++i) t.rsp[i] = detail::moved(m, k, t.rsp[i]);
    for (std::size_t i = 0; i < 7; ++i) t.ist[i] = detail::moved(m, k, t.ist[i]);
    *c.tss = t;
    return {};
}
inline fixup tss_stacks_fixup(tss_stacks_fixup_context& context) noexcept {
    return fixup{&relocate_tss_stacks, &context};
}

}  // namespace asreloc::x86_64
