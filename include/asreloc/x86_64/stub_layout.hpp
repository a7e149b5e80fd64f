// A ready-made layout for the x86-64 stub's system structures: page 0 holds the
// IDT, page 1 the GDT (with its TSS descriptor), the TSS and the LGDT/LIDT
// images; entry code and data pages follow. stub_fixups yields the fixups
// that make all of it follow the stub when it moves.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "asreloc/core/address.hpp"
#include "asreloc/manager/fixup.hpp"
#include "asreloc/x86_64/descriptors.hpp"
#include "asreloc/x86_64/fixups.hpp"
#include "asreloc/x86_64/paging_mode.hpp"

namespace asreloc::x86_64 {

// The GDT the stub carries. User data precedes user code so that SYSRET's
// fixed selector arithmetic (STAR) works; the 16-byte TSS descriptor takes the
// last two slots.
struct gdt_image {
    segment_descriptor null = segment_descriptor::null();
    segment_descriptor kernel_code = segment_descriptor::code64(privilege_level::ring0);
    segment_descriptor kernel_data = segment_descriptor::data(privilege_level::ring0);
    segment_descriptor user_data = segment_descriptor::data(privilege_level::ring3);
    segment_descriptor user_code = segment_descriptor::code64(privilege_level::ring3);
    tss_descriptor tss{};
};
static_assert(sizeof(gdt_image) == 56 && std::is_standard_layout_v<gdt_image>);

inline constexpr segment_selector kernel_code_selector = segment_selector::gdt(1);
inline constexpr segment_selector kernel_data_selector = segment_selector::gdt(2);
inline constexpr segment_selector user_data_selector = segment_selector::gdt(3, privilege_level::ring3);
inline constexpr segment_selector user_code_selector = segment_selector::gdt(4, privilege_level::ring3);
inline constexpr segment_selector tss_selector = segment_selector::gdt(5);

// The first two pages of the stub, as one object the embedder places at the
// stub's base (in the monitor's view of the stub pages).
struct alignas(4096) stub_tables {
    idt idt_gates{};  // page 0
    gdt_image gdt{};  // page 1
    task_state_segment tss{};
    pseudo_descriptor gdtr{};
    pseudo_descriptor idtr{};

    // Points the TSS descriptor and the GDTR/IDTR images at these tables as
    // the guest space sees them, with the stub's base at `placement`.
    constexpr void place(virt_addr placement) noexcept {
        gdt.tss = tss_descriptor::make(placement.value() + tss_offset(), tss_limit);
        gdtr = table_register(placement.value() + gdt_offset(), sizeof(gdt_image));
        idtr = table_register(placement.value() + idt_offset(), sizeof(idt));
        tss.io_map_base = tss_no_io_bitmap;
    }

    static constexpr std::uint64_t idt_offset() noexcept { return 0; }
    static constexpr std::uint64_t gdt_offset() noexcept { return 4096; }
    static constexpr std::uint64_t tss_offset() noexcept { return 4096 + sizeof(gdt_image); }
};
static_assert(sizeof(stub_tables) == 2 * 4096);
static_assert(offsetof(stub_tables, gdt) == stub_tables{}.gdt_offset());
static_assert(offsetof(stub_tables, tss) == stub_tables{}.tss_offset());

// The whole stub: the two table pages, then entry code, then data (stacks,
// the trap router); all 4 KiB pages, contiguous from the placement.
struct stub_layout {
    std::uint64_t entry_code_pages = 1;
    std::uint64_t data_pages = 1;

    static constexpr std::uint64_t table_pages = sizeof(stub_tables) / 4096;

    constexpr std::uint64_t entry_code_offset() const noexcept { return table_pages * 4096; }
    constexpr std::uint64_t data_offset() const noexcept { return entry_code_offset() + entry_code_pages * 4096; }
    constexpr std::uint64_t size() const noexcept { return data_offset() + data_pages * 4096; }
};

// The fixups of a stub built as stub_tables: the whole IDT, the TSS
// descriptor base, both table-register images and the TSS stacks. The
// contexts live here, so keep this object where it is while its fixups are
// registered (it cannot be copied or moved). `mode` is the guest space's
// paging mode (the canonical width of the stack tops); the stacks in use are
// the TSS pointers that are not zero at the first move, unless named with
// name_stacks() before it (needed for a stub built at the top of the space).
class stub_fixups {
public:
    stub_fixups(stub_tables& tables, std::uint64_t stub_size, paging_mode mode = paging_mode::four_level) noexcept
        : idt_{tables.idt_gates.data(), tables.idt_gates.size(), stub_size},
          tss_descriptor_{&tables.gdt.tss, stub_size},
          gdtr_{&tables.gdtr, stub_size},
          idtr_{&tables.idtr, stub_size},
          stacks_{&tables.tss, stub_size, mode} {}
    stub_fixups(const stub_fixups&) = delete;
    stub_fixups& operator=(const stub_fixups&) = delete;

    void name_stacks(tss_stack_set stacks) noexcept {
        stacks_.stacks = stacks;
        stacks_.stacks_named = true;
    }

    std::array<fixup, 5> list() noexcept {
        return {idt_fixup(idt_), tss_descriptor_fixup(tss_descriptor_), table_register_fixup(gdtr_),
                table_register_fixup(idtr_), tss_stacks_fixup(stacks_)};
    }

private:
    idt_fixup_context idt_;
    tss_descriptor_fixup_context tss_descriptor_;
    table_register_fixup_context gdtr_;
    table_register_fixup_context idtr_;
    tss_stacks_fixup_context stacks_;
};

}  // namespace asreloc::x86_64
