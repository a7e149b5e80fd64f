// The ready-made stub tables: where everything sits, and that their fixups move
// the whole set exactly as building them afresh at the new placement would.
#include <asreloc/x86_64/stub_layout.hpp>

#include <cstring>
#include <memory>

#include <catch2/catch.hpp>

#include "support/packed.hpp"

using asreloc::test::copy_of;

using namespace asreloc;
using namespace asreloc::x86_64;

namespace {

// Builds the tables as an embedder would for a stub whose base is `base`.
void build(stub_tables& t, const stub_layout& layout, virt_addr base) {
    t.place(base);
    for (std::size_t v = 0; v < 32; ++v) {
        t.idt_gates[v] = idt_gate::make(base.value() + layout.entry_code_offset() + 16 * v, kernel_code_selector,
                                        system_type::interrupt_gate, privilege_level::ring0, v == 8 ? 1 : 0);
    }
    t.idt_gates[0x80] = idt_gate::make(base.value() + layout.entry_code_offset() + 0x800, kernel_code_selector,
                                       system_type::trap_gate, privilege_level::ring3);
    t.tss.rsp[0] = base.value() + layout.size();                     // kernel stack at the top of the data
    t.tss.ist[0] = base.value() + layout.data_offset() + 0x800;      // double-fault stack
}

}  // namespace

TEST_CASE("the stub tables put the IDT on page 0 and the GDT, TSS and register images on page 1") {
    STATIC_REQUIRE(sizeof(stub_tables) == 8192);
    STATIC_REQUIRE(offsetof(stub_tables, idt_gates) == 0);
    STATIC_REQUIRE(offsetof(stub_tables, gdt) == 4096);
    STATIC_REQUIRE(offsetof(stub_tables, tss) == 4096 + 56);
    STATIC_REQUIRE(tss_selector.value == 0x28);
    STATIC_REQUIRE(user_code_selector.value == 0x23);
    STATIC_REQUIRE(user_data_selector.value == 0x1B);
    constexpr stub_layout layout{2, 3};
    STATIC_REQUIRE(layout.entry_code_offset() == 0x2000);
    STATIC_REQUIRE(layout.data_offset() == 0x4000);
    STATIC_REQUIRE(layout.size() == 0x7000);
}

TEST_CASE("placing the tables points the TSS descriptor and GDTR/IDTR at them") {
    auto t = std::make_unique<stub_tables>();
    t->place(virt_addr{0xFFFF'8000'0000'0000});
    CHECK(t->gdt.tss.base() == 0xFFFF'8000'0000'1038);
    CHECK(t->gdt.tss.limit() == 103);
    CHECK(t->gdt.tss.type() == system_type::tss_available);
    CHECK(copy_of(t->gdtr.base) == 0xFFFF'8000'0000'1000);
    CHECK(copy_of(t->gdtr.limit) == 55);
    CHECK(copy_of(t->idtr.base) == 0xFFFF'8000'0000'0000);
    CHECK(copy_of(t->idtr.limit) == 4095);
    CHECK(t->gdt.kernel_code.raw == 0x00AF'9B00'0000'FFFF);
}

TEST_CASE("the stub fixups move the tables exactly as building them at the new placement would, and back") {
    constexpr stub_layout layout{1, 2};
    constexpr virt_addr old_base{0xFFFF'8000'0020'0000};
    constexpr virt_addr new_base{0x0000'0000'0040'0000};
    auto t = std::make_unique<stub_tables>();
    auto expected = std::make_unique<stub_tables>();
    auto original = std::make_unique<stub_tables>();
    build(*t, layout, old_base);
    build(*expected, layout, new_base);
    std::memcpy(original.get(), t.get(), sizeof(stub_tables));

    stub_fixups fixups(*t, layout.size());
    const auto list = fixups.list();
    for (const auto& f : list) REQUIRE(f(old_base, new_base));
    CHECK(std::memcmp(t.get(), expected.get(), sizeof(stub_tables)) == 0);
    for (const auto& f : list) REQUIRE(f(new_base, old_base));
    CHECK(std::memcmp(t.get(), original.get(), sizeof(stub_tables)) == 0);
}
