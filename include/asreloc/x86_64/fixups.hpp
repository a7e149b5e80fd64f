// Built-in fixups for the x86-64 structures the stub carries: IDT gate offsets,
// the GDT's TSS descriptor base, the GDTR/IDTR images and the TSS stack
// pointers. Each follows the contract of manager/fixup.hpp.
//
// Which values move: a value points into the stub when it lies in the stub's
// old placement [from, from + stub_size). Stack pointers (RSP0-2, IST1-7) are
// stack *tops*, so for them the window is (from, from + stub_size]: a stack at
// the very end of the stub has its top at from + stub_size. Gates that are not
// present are ignored: the CPU never reads their offset. Everything else is
// left alone.
//
// A stub at the very top of the address space: in 64-bit mode the CPU loads
// RSP0/ISTn, aligns it down to 16 bytes and decrements RSP before each push
// (SDM vol. 3A, 6.14.4 "Stack Switching in IA-32e Mode" and 6.14.5), so a
// stack whose last byte is 2^64 - 1 has its top stored as 0, a canonical
// value, and its first push writes 0xFFFF'FFFF'FFFF'FFF8. The arithmetic here is modulo 2^64
// and accepts that top. (The legacy 32-bit TSS is the same modulo 2^32: ESP0 =
// 0 tops a stack that ends at 4 GiB. This library has no 32-bit TSS; a 32-bit
// guest's 4 GiB window holds a 64-bit stub whose stack top 2^32 needs no wrap.)
// What is refused with error::non_canonical, nothing written: a placement
// that itself runs past 2^64, and a stack top that would be non-canonical
// (the end of the lower half, 2^47 or 2^56: the CPU would raise #SS on it).
//
// Exact reversal: a fixup refuses (error::fixup_refused, its target as it
// was) when a value that does not move already lies in the new placement's
// window, because the reverse move could not tell it from a moved one. Once a
// move is accepted, apply(to, from) moves back exactly the values it moved and
// restores every byte. (The IDT fixup finds a refusal in the same pass that
// moves the gates, and puts back those it moved: like any relocation, it must
// not run while another processor can take an interrupt through this IDT.)
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
#include "asreloc/x86_64/paging_mode.hpp"

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
    // [base, base + size) does not run past 2^64 (its end may be exactly 2^64).
    constexpr bool fits(std::uint64_t base) const noexcept { return size == 0 || base + (size - 1) >= base; }
    // Both placements: checking the old one too makes the reverse move pass
    // whenever the forward one did.
    constexpr status check() const noexcept {
        if (!fits(from) || !fits(to)) return failure(error::non_canonical);
        return {};
    }
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

// One address field of a packed structure, read by `get` and written by
// `set` (its members cannot be bound to references).
template <class Get, class Set>
status relocate_address(const stub_move& m, Get get, Set set) noexcept {
    if (auto r = m.check(); !r) return r;
    const std::uint64_t v = get();
    if (blocks(m, window_kind::address, v)) return failure(error::fixup_refused);
    set(moved(m, window_kind::address, v));
    return {};
}

// Undoes the first `count` gates of a forward pass of relocate_idt: the
// reverse move, whose window is the forward move's target.
inline void move_gates_back(const stub_move& m, idt_gate* gates, std::size_t count) noexcept {
    const stub_move back{m.to, m.from, m.size};
    for (std::size_t i = 0; i < count; ++i) {
        idt_gate& g = gates[i];
        if (g.present()) g.set_offset(moved(back, window_kind::address, g.offset()));
    }
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
    if (auto r = m.check(); !r) return r;
    // One pass moves the gates. A gate that refuses has the gates before it
    // moved back, which is exact: before it, a present gate pointing into the
    // new placement is one this pass moved there (one that was there already
    // would have refused first). A refusal thus leaves the table as it was, as
    // a check pass ahead of the writes would, at the cost of a second pass
    // only when refused: most moves are accepted, and the IDT is the largest
    // structure a stub carries.
    constexpr auto k = detail::window_kind::address;
    for (std::size_t i = 0; i < c.count; ++i) {
        idt_gate& g = c.gates[i];
        if (!g.present()) continue;
        const std::uint64_t offset = g.offset();
        if (detail::moves(m, k, offset)) {
            g.set_offset(m.relocated(offset));
        } else if (detail::blocks(m, k, offset)) {
            detail::move_gates_back(m, c.gates, i);
            return failure(error::fixup_refused);
        }
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
    return detail::relocate_address(
        detail::stub_move{from.value(), to.value(), c.stub_size}, [&] { return c.descriptor->base(); },
        [&](std::uint64_t base) { c.descriptor->set_base(base); });
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
    return detail::relocate_address(
        detail::stub_move{from.value(), to.value(), c.stub_size}, [&] { return c.image->base; },
        [&](std::uint64_t base) { c.image->base = base; });
}
inline fixup table_register_fixup(table_register_fixup_context& context) noexcept {
    return fixup{&relocate_table_register, &context};
}

// ---------------------------------------------------------------------------
// RSP0-2 and IST1-7 of a 64-bit TSS: the stacks in use whose top lies in the stub.

// The ten stack pointers of a 64-bit TSS, numbered in their TSS order: 0-2 are
// RSP0-2, 3-9 are IST1-7. A set of them is a bit mask in that order.
inline constexpr std::size_t tss_stack_count = 10;

struct tss_stack_set {
    std::uint16_t bits = 0;

    static constexpr tss_stack_set rsp(unsigned level) noexcept {  // RSP0..RSP2
        Expects(level < 3);
        return {static_cast<std::uint16_t>(1U << level)};
    }
    static constexpr tss_stack_set ist(unsigned n) noexcept {  // IST1..IST7
        Expects(n >= 1 && n <= 7);
        return {static_cast<std::uint16_t>(1U << (2 + n))};
    }
    // The pointers that are not zero: what a TSS uses when zero marks an unused slot.
    static constexpr tss_stack_set nonzero_in(const task_state_segment& t) noexcept;

    constexpr bool contains(std::size_t i) const noexcept { return ((bits >> i) & 1U) != 0; }
    constexpr tss_stack_set operator|(tss_stack_set o) const noexcept {
        return {static_cast<std::uint16_t>(bits | o.bits)};
    }
    constexpr bool operator==(const tss_stack_set&) const noexcept = default;
};

// Stack pointer i (TSS order) by value: the TSS is packed, its members cannot
// be bound to references.
constexpr std::uint64_t stack_pointer(const task_state_segment& t, std::size_t i) noexcept {
    return i < 3 ? t.rsp[i] : t.ist[i - 3];
}
constexpr void set_stack_pointer(task_state_segment& t, std::size_t i, std::uint64_t v) noexcept {
    if (i < 3) t.rsp[i] = v;
    else t.ist[i - 3] = v;
}

constexpr tss_stack_set tss_stack_set::nonzero_in(const task_state_segment& t) noexcept {
    tss_stack_set s;
    for (std::size_t i = 0; i < tss_stack_count; ++i)
        if (stack_pointer(t, i) != 0) s.bits = static_cast<std::uint16_t>(s.bits | (1U << i));
    return s;
}

struct tss_stacks_fixup_context {
    task_state_segment* tss = nullptr;
    std::uint64_t stub_size = 0;
    // The canonical width the moved stack tops must fit: the CPU raises #SS
    // on a non-canonical RSP loaded from the TSS. 4-level is the stricter.
    paging_mode mode = paging_mode::four_level;
    // The stacks the stub uses; pointers outside the set never move. Unnamed,
    // they are the pointers that are not zero when the fixup first runs, and
    // stay that set from then on: a stack that ends at 2^64 has its top
    // stored as 0 and must keep moving. Name them (stacks_named = true) when
    // the stub is built at the very top of the space, where the first run
    // cannot tell an unused slot from such a stack (it refuses instead).
    tss_stack_set stacks{};
    bool stacks_named = false;
};

namespace detail {

// A stack top the CPU can load and push below: canonical, where 0 (the top of
// a stack that ends at 2^64) is canonical too.
constexpr bool loadable_stack_top(std::uint64_t top, paging_mode mode) noexcept {
    return virt_addr{top}.is_canonical(width(mode));
}

// The stacks in use: named, or those not zero now. Refuses when a zero
// pointer might be the top of a stack ending at 2^64 (the old placement ends
// there), as an unused slot and such a stack look the same.
inline result<tss_stack_set> stacks_in_use(const tss_stacks_fixup_context& c, const stub_move& m,
                                           const task_state_segment& t) noexcept {
    if (c.stacks_named) return c.stacks;
    const tss_stack_set nonzero = tss_stack_set::nonzero_in(t);
    const bool old_ends_at_top = m.size != 0 && m.from + m.size == 0;
    if (old_ends_at_top && nonzero.bits != (1U << tss_stack_count) - 1) return failure(error::fixup_refused);
    return nonzero;
}

}  // namespace detail

inline status relocate_tss_stacks(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<tss_stacks_fixup_context*>(context);
    Expects(c.tss != nullptr);
    const detail::stub_move m{from.value(), to.value(), c.stub_size};
    if (auto r = m.check(); !r) return r;
    constexpr auto k = detail::window_kind::stack_top;
    task_state_segment t = *c.tss;  // work on a copy: written back only when accepted
    const auto stacks = detail::stacks_in_use(c, m, t);
    if (!stacks) return failure(stacks.error_code());
    for (std::size_t i = 0; i < tss_stack_count; ++i) {
        if (!stacks->contains(i)) continue;
        const std::uint64_t v = stack_pointer(t, i);
        if (detail::blocks(m, k, v)) return failure(error::fixup_refused);
        // Checking the old top too makes the reverse move pass whenever this one did.
        if (detail::moves(m, k, v) &&
            (!detail::loadable_stack_top(v, c.mode) || !detail::loadable_stack_top(m.relocated(v), c.mode)))
            return failure(error::non_canonical);
    }
    for (std::size_t i = 0; i < tss_stack_count; ++i) {
        if (stacks->contains(i)) set_stack_pointer(t, i, detail::moved(m, k, stack_pointer(t, i)));
    }
    *c.tss = t;
    c.stacks = *stacks;  // from now on, a stack moved to 2^64 (top 0) is still in use
    c.stacks_named = true;
    return {};
}
inline fixup tss_stacks_fixup(tss_stacks_fixup_context& context) noexcept {
    return fixup{&relocate_tss_stacks, &context};
}

}  // namespace asreloc::x86_64
