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

struct [[gnu::packed]] table_register {
    std::uint16_t limit;
    std::uint64_t base;
};

alignas(16) std::uint64_t gdt[gdt_entries] = {};
alignas(16) task_state_segment tss{};
alignas(16) idt_gate idt[256]{};
alignas(16) std::uint8_t rsp0_stack[16384];
alignas(16) std::uint8_t double_fault_stack[8192];

}  // namespace

void fill_gdt(std::uint64_t (&entries)[gdt_entries], std::uint64_t tss_base) noexcept {
    entries[0] = 0;
    entries[1] = 0x00af9a000000ffff;  // 0x08 kernel code, 64-bit
    entries[2] = 0x00cf92000000ffff;  // 0x10 kernel data
    entries[3] = 0x00cff2000000ffff;  // 0x18 user data, DPL 3
    entries[4] = 0x00affa000000ffff;  // 0x20 user code, 64-bit, DPL 3
    const std::uint64_t limit = tss_bytes - 1;  // 0x28: available 64-bit TSS, 16 bytes
    entries[5] = (limit & 0xffff) | ((tss_base & 0xffffff) << 16) | (std::uint64_t{0x89} << 40) |
                 (((limit >> 16) & 0xf) << 48) | (((tss_base >> 24) & 0xff) << 56);
    entries[6] = tss_base >> 32;
}

void fill_tss(void* tss_memory, std::uint64_t rsp0, std::uint64_t ist1) noexcept {
    auto* t = static_cast<task_state_segment*>(tss_memory);
    *t = task_state_segment{};
    t->rsp[0] = rsp0;
    t->ist[0] = ist1;
    t->io_map_base = sizeof(task_state_segment);
}

idt_gate make_gate(std::uint64_t handler, std::uint8_t dpl, std::uint8_t ist) noexcept {
    idt_gate g{};
    g.offset_low = static_cast<std::uint16_t>(handler);
    g.selector = kernel_code;
    g.ist = ist;
    g.type_attributes = static_cast<std::uint8_t>(0x8e | (dpl << 5));  // present, 64-bit interrupt gate
    g.offset_mid = static_cast<std::uint16_t>(handler >> 16);
    g.offset_high = static_cast<std::uint32_t>(handler >> 32);
    return g;
}

void load_descriptor_tables(std::uint64_t gdt_base, std::uint64_t idt_base) noexcept {
    const table_register r{gdt_entries * 8 - 1, gdt_base};
    const table_register i{256 * sizeof(idt_gate) - 1, idt_base};
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
        "lidt %4\n"
        :
        : "m"(r), "i"(std::uint64_t{kernel_code}), "r"(std::uint32_t{kernel_data}), "r"(std::uint32_t{tss_selector}),
          "m"(i)
        : "rax", "memory");
}

void set_gate(std::uint8_t vector, std::uint8_t dpl) noexcept {
    const auto handler = reinterpret_cast<std::uint64_t>(isr_stubs) + 16 * std::uint64_t{vector};
    idt[vector] = make_gate(handler, dpl, vector == 8 ? 1 : 0);
}

void install_descriptors() noexcept {
    fill_tss(&tss, reinterpret_cast<std::uint64_t>(rsp0_stack + sizeof(rsp0_stack)),
             reinterpret_cast<std::uint64_t>(double_fault_stack + sizeof(double_fault_stack)));
    fill_gdt(gdt, reinterpret_cast<std::uint64_t>(&tss));
    for (unsigned v = 0; v < 256; ++v) set_gate(static_cast<std::uint8_t>(v), 0);
    set_gate(vector_user_return, 3);
    load_descriptor_tables(reinterpret_cast<std::uint64_t>(gdt), reinterpret_cast<std::uint64_t>(idt));
}

}  // namespace bare_metal
