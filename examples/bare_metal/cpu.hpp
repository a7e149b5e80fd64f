// The few privileged instructions the kernel needs, as inline functions, and
// the trap frame entry.S builds. Nothing here knows about asreloc.
#pragma once

#include <cstdint>

namespace bare_metal {

inline void outb(std::uint16_t port, std::uint8_t v) noexcept { asm volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
inline std::uint8_t inb(std::uint16_t port) noexcept {
    std::uint8_t v;
    asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

inline std::uint64_t read_cr0() noexcept { std::uint64_t v; asm volatile("mov %%cr0, %0" : "=r"(v)); return v; }
inline std::uint64_t read_cr2() noexcept { std::uint64_t v; asm volatile("mov %%cr2, %0" : "=r"(v)); return v; }
inline std::uint64_t read_cr3() noexcept { std::uint64_t v; asm volatile("mov %%cr3, %0" : "=r"(v)); return v; }
inline std::uint64_t read_cr4() noexcept { std::uint64_t v; asm volatile("mov %%cr4, %0" : "=r"(v)); return v; }
inline void write_cr3(std::uint64_t v) noexcept { asm volatile("mov %0, %%cr3" ::"r"(v) : "memory"); }
inline void write_cr4(std::uint64_t v) noexcept { asm volatile("mov %0, %%cr4" ::"r"(v) : "memory"); }
inline void invlpg(std::uint64_t va) noexcept { asm volatile("invlpg (%0)" ::"r"(va) : "memory"); }

inline std::uint64_t read_tsc() noexcept {
    std::uint32_t lo, hi;
    asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (std::uint64_t{hi} << 32) | lo;
}

// PKRU (needs CR4.PKE); ECX and EDX must be 0.
inline void write_pkru(std::uint32_t v) noexcept { asm volatile("wrpkru" ::"a"(v), "c"(0), "d"(0) : "memory"); }

struct cpuid_regs {
    std::uint32_t eax, ebx, ecx, edx;
};
inline cpuid_regs cpuid(std::uint32_t leaf, std::uint32_t sub = 0) noexcept {
    cpuid_regs r;
    asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(sub));
    return r;
}

inline constexpr std::uint64_t cr4_pge = std::uint64_t{1} << 7;
inline constexpr std::uint64_t cr4_smep = std::uint64_t{1} << 20;
inline constexpr std::uint64_t cr4_pke = std::uint64_t{1} << 22;
inline constexpr std::uint64_t cr4_la57 = std::uint64_t{1} << 12;
inline constexpr std::uint64_t cr0_wp = std::uint64_t{1} << 16;

[[noreturn]] inline void halt_forever() noexcept {
    for (;;) asm volatile("cli; hlt");
}

// isa-debug-exit (iobase 0xf4): QEMU exits with (code << 1) | 1.
enum class exit_code : std::uint8_t { pass = 0x10, fail = 0x11, skip = 0x12 };
[[noreturn]] inline void qemu_exit(exit_code c) noexcept {
    outb(0xf4, static_cast<std::uint8_t>(c));
    halt_forever();
}

// What entry.S pushes, lowest address first.
struct trap_frame {
    std::uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    std::uint64_t vector, error_code;
    std::uint64_t rip, cs, rflags, rsp, ss;

    bool from_user() const noexcept { return (cs & 3) == 3; }
};

}  // namespace bare_metal
