// GDT (kernel and user segments, one TSS), TSS (RSP0 for traps from CPL 3,
// IST1 for #DF) and IDT. Layouts: SDM vol. 3A, 3.4.5 (segment descriptors),
// 7.2.3 (64-bit TSS descriptor), 7.7 (64-bit TSS), 6.14.1 (64-bit IDT gates).
#include <cstdint>

#include "kernel.hpp"

namespace bare_metal {
namespace {

struct [[gnu::packed]] task_state_segment {
    std::uint32_t reserved0;
    std::uint64_t rsp[3];
    std::uint64_t reserved1;
    std::uint64_t ist[7];
    std::uint64_t reserved2;
    std::uint16_t reserved3;
    std::uint16_t io_map_base;
};
static_assert(sizeof(task_state_segment) == 104);

struct idt_gate {
    std::uint16_t offset_low;
    std::uint16_t selector;
    std::uint8_t ist;
    std::uint8_t type_attributes;
    std::uint16_t offset_mid;
    std::uint32_t offset_high;
    std::uint32_t reserved;
};
static_assert(sizeof(idt_gate) == 16);

struct [[gnu::packed]] table_register {
    std::uint16_t limit;
    std::uint64_t base;
};

alignas(16) std::uint64_t gdt[7] = {
    0,
    0x00af9a000000ffff,  // 0x08 kernel code, 64-bit
    0x00cf92000000ffff,  // 0x10 kernel data
    0x00cff2000000ffff,  // 0x18 user data, DPL 3
    0x00affa000000ffff,  // 0x20 user code, 64-bit, DPL 3
    0, 0,                // 0x28 TSS (16 bytes)
};
alignas(16) task_state_segment tss{};
alignas(16) idt_gate idt[256]{};
alignas(16) std::uint8_t rsp0_stack[16384];
alignas(16) std::uint8_t double_fault_stack[8192];

void set_tss_descriptor() noexcept {
    const auto base = reinterpret_cast<std::uint64_t>(&tss);
    const std::uint64_t limit = sizeof(tss) - 1;
    gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (std::uint64_t{0x89} << 40) |
             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[6] = base >> 32;
}

void load_gdt() noexcept {
    const table_register r{sizeof(gdt) - 1, reinterpret_cast<std::uint64_t>(gdt)};
    asm volatile(
        "lgdt %0\n"
        "pushq %1\n"
        "leaq 1f(%%rip), %%rax\n"
        "pushq %%rax\n"
        "lretq\n"
        "1:\n"
        "movw %w2, %%ds\n"
        "movw %w2, %%es\n"
        "movw %w2, %%ss\n"
        "ltr %w3\n"
        :
        : "m"(r), "i"(std::uint64_t{kernel_code}), "r"(std::uint32_t{kernel_data}), "r"(std::uint32_t{tss_selector})
        : "rax", "memory");
}

}  // namespace

void set_gate(std::uint8_t vector, std::uint8_t dpl) noexcept {
    const auto handler = reinterpret_cast<std::uint64_t>(isr_stubs) + 16 * std::uint64_t{vector};
    idt_gate& g = idt[vector];
    g.offset_low = static_cast<std::uint16_t>(handler);
    g.selector = kernel_code;
    g.ist = vector == 8 ? 1 : 0;
    g.type_attributes = static_cast<std::uint8_t>(0x8e | (dpl << 5));  // present, 64-bit interrupt gate
    g.offset_mid = static_cast<std::uint16_t>(handler >> 16);
    g.offset_high = static_cast<std::uint32_t>(handler >> 32);
    g.reserved = 0;
}

void install_descriptors() noexcept {
    tss.rsp[0] = reinterpret_cast<std::uint64_t>(rsp0_stack + sizeof(rsp0_stack));
    tss.ist[0] = reinterpret_cast<std::uint64_t>(double_fault_stack + sizeof(double_fault_stack));
    tss.io_map_base = sizeof(tss);
    set_tss_descriptor();
    load_gdt();
    for (unsigned v = 0; v < 256; ++v) set_gate(static_cast<std::uint8_t>(v), 0);
    set_gate(vector_user_return, 3);
    const table_register r{sizeof(idt) - 1, reinterpret_cast<std::uint64_t>(idt)};
    asm volatile("lidt %0" ::"m"(r) : "memory");
}

}  // namespace bare_metal
