// Emulates one guest MOV against memory the guest cannot reach directly (its
// content was displaced into the shadow store): decode at the faulting RIP,
// check the decoded address is the faulting one, do the load or store through
// the caller's accessors, and step RIP past the instruction.
#pragma once

#include <cstdint>

#include "mov_decoder.hpp"

namespace bare_metal {

// Register n of the frame in the encoding's order (rax, rcx, rdx, rbx, rsp,
// rbp, rsi, rdi, r8..r15). `rsp` is the interrupted RSP, which the frame keeps
// apart from the pushed registers.
template <class Frame>
std::uint64_t& frame_register(Frame& f, std::uint64_t& rsp, unsigned n) noexcept {
    std::uint64_t* const regs[16] = {&f.rax, &f.rcx, &f.rdx, &f.rbx, &rsp, &f.rbp, &f.rsi, &f.rdi,
                                     &f.r8,  &f.r9,  &f.r10, &f.r11, &f.r12, &f.r13, &f.r14, &f.r15};
    return *regs[n & 15];
}

enum class emulation : std::uint8_t { done, not_decodable, address_mismatch, access_failed };

// `f` holds the general registers (rax .. r15 by name), `rip` and `rsp` the
// interrupted instruction and stack pointers.
// fetch(va, byte&) -> bool reads one instruction byte through the guest space;
// read(va, bytes, value&) -> bool and write(va, bytes, value) -> bool access the
// displaced content (little-endian, 4 or 8 bytes, within one page).
template <class Frame, class Fetch, class Read, class Write>
emulation emulate_mov(Frame& f, std::uint64_t& rip, std::uint64_t& rsp, std::uint64_t fault_address, Fetch&& fetch,
                      Read&& read, Write&& write) noexcept {
    std::uint8_t code[15];
    std::size_t n = 0;
    while (n < sizeof(code) && fetch(rip + n, code[n])) ++n;
    const auto decoded = decode_mov(code, n);
    if (!decoded.ok) return emulation::not_decodable;
    const mov_access& m = decoded.access;
    std::uint64_t regs[16];
    for (unsigned r = 0; r < 16; ++r) regs[r] = frame_register(f, rsp, r);
    if (m.address(regs) != fault_address) return emulation::address_mismatch;
    const std::uint64_t mask = m.width == 8 ? ~std::uint64_t{0} : 0xffffffff;
    if (m.what == mov_access::kind::load) {
        std::uint64_t v = 0;
        if (!read(fault_address, m.width, v)) return emulation::access_failed;
        frame_register(f, rsp, m.reg) = v & mask;  // a 32-bit load zero-extends (SDM vol. 1, 3.4.1.1)
    } else {
        const std::uint64_t v = m.what == mov_access::kind::store_register ? frame_register(f, rsp, m.reg)
                                                                          : static_cast<std::uint64_t>(m.immediate);
        if (!write(fault_address, m.width, v & mask)) return emulation::access_failed;
    }
    rip += m.length;
    return emulation::done;
}

}  // namespace bare_metal
