// Decodes the few MOV forms the demo guest uses to touch memory, so the
// monitor can emulate a guest access to displaced content against the shadow
// store: load or store, operand width, register, immediate, instruction length.
// Anything else is reported as not decodable (and then reflected, never guessed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace bare_metal {

// Supported (SDM vol. 2, MOV; ModRM/SIB per vol. 2, 2.1.5):
//   [REX] 8B /r      mov r32/r64, r/m32/r/m64     (load)
//   [REX] 89 /r      mov r/m32/r/m64, r32/r64     (store)
//   [REX] C7 /0 id   mov r/m32/r/m64, imm32       (store; sign-extended for 64-bit)
// with a memory operand of mod 00/01/10: [base], [base + disp8], [base + disp32],
// and a SIB byte with or without an index (scale 1, 2, 4, 8). RIP-relative and
// absolute (no base) forms, prefixes other than REX, and register operands
// (mod 11) are not decoded.
struct mov_access {
    enum class kind : std::uint8_t { load, store_register, store_immediate };
    kind what = kind::load;
    std::uint8_t width = 8;        // bytes: 4 or 8
    std::uint8_t reg = 0;          // the register operand (ModRM.reg + REX.R), 0 = rax .. 15 = r15
    std::uint8_t base = 0;         // base register of the memory operand
    bool has_index = false;
    std::uint8_t index = 0;
    std::uint8_t scale = 1;
    std::int64_t displacement = 0;
    std::int64_t immediate = 0;    // store_immediate only (already sign-extended)
    std::uint8_t length = 0;       // bytes of the whole instruction

    // The linear address the instruction accesses, given the register file
    // indexed like `reg` (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
    constexpr std::uint64_t address(const std::uint64_t (&regs)[16]) const noexcept {
        std::uint64_t a = regs[base] + static_cast<std::uint64_t>(displacement);
        if (has_index) a += regs[index] * scale;
        return a;
    }
};

struct mov_decode_result {
    bool ok;
    mov_access access;
};

// `code` holds the bytes at the faulting RIP (at most 15 are read; `size` says
// how many are available).
inline mov_decode_result decode_mov(const std::uint8_t* code, std::size_t size) noexcept {
    mov_access m{};
    std::size_t i = 0;
    const auto byte = [&](std::uint8_t& out) noexcept {
        if (i >= size || i >= 15) return false;
        out = code[i++];
        return true;
    };
    std::uint8_t b = 0;
    if (!byte(b)) return {false, m};
    std::uint8_t rex = 0;
    if ((b & 0xf0) == 0x40) {
        rex = b;
        if (!byte(b)) return {false, m};
    }
    if (b == 0x8b) m.what = mov_access::kind::load;
    else if (b == 0x89) m.what = mov_access::kind::store_register;
    else if (b == 0xc7) m.what = mov_access::kind::store_immediate;
    else return {false, m};
    m.width = (rex & 0x08) ? 8 : 4;

    std::uint8_t modrm = 0;
    if (!byte(modrm)) return {false, m};
    const std::uint8_t mod = modrm >> 6;
    const std::uint8_t reg = (modrm >> 3) & 7;
    std::uint8_t rm = modrm & 7;
    if (mod == 3) return {false, m};
    if (m.what == mov_access::kind::store_immediate && reg != 0) return {false, m};
    m.reg = static_cast<std::uint8_t>(reg | ((rex & 0x04) ? 8 : 0));

    if (rm == 4) {
        std::uint8_t sib = 0;
        if (!byte(sib)) return {false, m};
        const std::uint8_t index = static_cast<std::uint8_t>(((sib >> 3) & 7) | ((rex & 0x02) ? 8 : 0));
        const std::uint8_t base = sib & 7;
        if (base == 5 && mod == 0) return {false, m};  // disp32 with no base
        if (index != 4) {  // 100b without REX.X means "no index"
            m.has_index = true;
            m.index = index;
            m.scale = static_cast<std::uint8_t>(1u << (sib >> 6));
        }
        rm = base;
    } else if (rm == 5 && mod == 0) {
        return {false, m};  // RIP-relative
    }
    m.base = static_cast<std::uint8_t>(rm | ((rex & 0x01) ? 8 : 0));

    if (mod == 1) {
        std::uint8_t d = 0;
        if (!byte(d)) return {false, m};
        m.displacement = static_cast<std::int8_t>(d);
    } else if (mod == 2) {
        std::uint32_t d = 0;
        for (int k = 0; k < 4; ++k) {
            std::uint8_t x = 0;
            if (!byte(x)) return {false, m};
            d |= std::uint32_t{x} << (8 * k);
        }
        m.displacement = static_cast<std::int32_t>(d);
    }
    if (m.what == mov_access::kind::store_immediate) {
        std::uint32_t v = 0;
        for (int k = 0; k < 4; ++k) {
            std::uint8_t x = 0;
            if (!byte(x)) return {false, m};
            v |= std::uint32_t{x} << (8 * k);
        }
        m.immediate = static_cast<std::int32_t>(v);
    }
    m.length = static_cast<std::uint8_t>(i);
    return {true, m};
}

}  // namespace bare_metal
