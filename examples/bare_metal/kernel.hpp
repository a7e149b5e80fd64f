// What the kernel's parts share: descriptor setup, the trap hooks the tests
// install, and the access probes of entry.S.
#pragma once

#include <cstdint>

#include "cpu.hpp"

namespace bare_metal {

// GDT selectors (descriptors.cpp). User selectors carry RPL 3.
inline constexpr std::uint16_t kernel_code = 0x08;
inline constexpr std::uint16_t kernel_data = 0x10;
inline constexpr std::uint16_t user_data = 0x1b;
inline constexpr std::uint16_t user_code = 0x23;
inline constexpr std::uint16_t tss_selector = 0x28;

inline constexpr std::uint8_t vector_page_fault = 14;
inline constexpr std::uint8_t vector_user_return = 0x81;  // the user probe's way back

// Descriptor images (descriptors.cpp), also used to build the stub's copies.
// SDM vol. 3A: 3.4.5 segment descriptors, 7.2.3 the 64-bit TSS descriptor,
// 7.7 the 64-bit TSS, 6.14.1 64-bit IDT gates.
inline constexpr unsigned gdt_entries = 7;
inline constexpr std::uint64_t tss_bytes = 104;
struct idt_gate {
    std::uint16_t offset_low;
    std::uint16_t selector;
    std::uint8_t ist;
    std::uint8_t type_attributes;
    std::uint16_t offset_mid;
    std::uint32_t offset_high;
    std::uint32_t reserved;

    std::uint64_t offset() const noexcept {
        return offset_low | (std::uint64_t{offset_mid} << 16) | (std::uint64_t{offset_high} << 32);
    }
};
static_assert(sizeof(idt_gate) == 16);
void fill_gdt(std::uint64_t (&entries)[gdt_entries], std::uint64_t tss_base) noexcept;
void fill_tss(void* tss_memory, std::uint64_t rsp0, std::uint64_t ist1) noexcept;
idt_gate make_gate(std::uint64_t handler, std::uint8_t dpl, std::uint8_t ist) noexcept;
// lgdt + segment reload + ltr + lidt. The TSS descriptor must be "available".
void load_descriptor_tables(std::uint64_t gdt_base, std::uint64_t idt_base) noexcept;

void install_descriptors() noexcept;
// Gate `vector` as an interrupt gate (IF cleared on entry) callable from `dpl`.
void set_gate(std::uint8_t vector, std::uint8_t dpl) noexcept;

// A resumable #PF: the hook returns true when it made the access valid (the
// instruction is retried), false when the fault is not its business.
using page_fault_hook = bool (*)(trap_frame&, std::uint64_t cr2) noexcept;
void set_page_fault_hook(page_fault_hook h) noexcept;

// One armed probe: the next #PF at a probe instruction (CPL 0) or anywhere at
// CPL 3 is recorded here instead of being fatal.
struct probe_fault {
    bool faulted;
    std::uint64_t error_code;
    std::uint64_t cr2;
};
void arm_probe(std::uint64_t fetch_target) noexcept;
probe_fault disarm_probe() noexcept;

[[noreturn]] void fail(const char* why) noexcept;

}  // namespace bare_metal

extern "C" {
std::uint64_t probe_read(std::uint64_t va);
void probe_write(std::uint64_t va, std::uint64_t value);
std::uint64_t probe_fetch(std::uint64_t va);
std::uint64_t enter_user(std::uint64_t rip, std::uint64_t rsp, std::uint64_t a0, std::uint64_t a1,
                         std::uint64_t a2);
[[noreturn]] void return_to_kernel(std::uint64_t value);
extern const char probe_read_insn[], probe_write_insn[], probe_landing[];
extern const char user_probe_start[], user_probe_end[], user_probe_page[];
extern const char isr_stubs[];
extern char kernel_end[];
extern std::uint32_t boot_multiboot_info;
}
