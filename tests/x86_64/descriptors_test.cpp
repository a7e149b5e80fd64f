// Bit-level checks of the descriptor formats against values worked out by
// hand from the SDM figures (vol. 3A, 3.4.5, 6.14.1, 7.2.3, 7.7, 2.4).
#include <asreloc/x86_64/descriptors.hpp>

#include <array>
#include <cstring>

#include <catch2/catch.hpp>

#include "support/packed.hpp"

using asreloc::test::copy_of;

using namespace asreloc::x86_64;

namespace {
template <class T>
std::array<unsigned char, sizeof(T)> bytes_of(const T& v) {
    std::array<unsigned char, sizeof(T)> out{};
    std::memcpy(out.data(), &v, sizeof(T));
    return out;
}
}  // namespace

TEST_CASE("an interrupt gate encodes offset, selector, IST, type, DPL and P where Figure 6-8 puts them") {
    constexpr auto g = idt_gate::make(0x123456789ABCDEF0, segment_selector::gdt(1), system_type::interrupt_gate,
                                      privilege_level::ring3, 2);
    // bytes 7:4 = offset 31:16 | P DPL 0 type | 00000 IST ; bytes 3:0 = selector | offset 15:0
    STATIC_REQUIRE(g.low == 0x9ABC'EE02'0008'DEF0);
    STATIC_REQUIRE(g.high == 0x0000'0000'1234'5678);
    STATIC_REQUIRE(g.offset() == 0x123456789ABCDEF0);
    STATIC_REQUIRE(g.selector() == segment_selector{0x08});
    STATIC_REQUIRE(g.ist() == 2);
    STATIC_REQUIRE(g.type() == system_type::interrupt_gate);
    STATIC_REQUIRE(g.dpl() == privilege_level::ring3);
    STATIC_REQUIRE(g.present());
    const auto b = bytes_of(g);
    CHECK(b[0] == 0xF0);
    CHECK(b[1] == 0xDE);
    CHECK(b[2] == 0x08);
    CHECK(b[3] == 0x00);
    CHECK(b[4] == 0x02);
    CHECK(b[5] == 0xEE);
    CHECK(b[6] == 0xBC);
    CHECK(b[7] == 0x9A);
    CHECK(b[8] == 0x78);
    CHECK(b[11] == 0x12);
    for (int i = 12; i < 16; ++i) CHECK(b[i] == 0);
}

TEST_CASE("a ring 0 trap gate into the higher half has type 0xF and no IST") {
    constexpr auto g = idt_gate::make(0xFFFFFFFF80001000, segment_selector::gdt(1), system_type::trap_gate);
    STATIC_REQUIRE(g.low == 0x8000'8F00'0008'1000);
    STATIC_REQUIRE(g.high == 0xFFFF'FFFF);
}

TEST_CASE("setting the gate offset touches only the three offset fields") {
    auto g = idt_gate::make(0, segment_selector{0x10}, system_type::interrupt_gate, privilege_level::ring0, 7);
    const auto before_low = g.low;
    g.set_offset(0xFFFFFFFFFFFFFFFF);
    CHECK(g.offset() == 0xFFFFFFFFFFFFFFFF);
    CHECK((g.low & 0x0000'FFFF'FFFF'0000) == (before_low & 0x0000'FFFF'FFFF'0000));
    CHECK(g.high == 0xFFFF'FFFF);  // reserved upper half stays zero
    CHECK(g.ist() == 7);
    CHECK(g.selector() == segment_selector{0x10});
    g.set_ist(9);  // out of range: only bits 2:0 are written
    CHECK(g.ist() == 1);
    CHECK(((g.low >> 35) & 0x1F) == 0);
}

TEST_CASE("an IDT of 256 gates is one 4 KiB page with vector n at byte 16 n") {
    STATIC_REQUIRE(sizeof(idt) == 4096);
    idt table{};
    table[14] = idt_gate::make(0xABCD, segment_selector{8}, system_type::interrupt_gate);
    unsigned char raw[4096];
    std::memcpy(raw, table.data(), sizeof raw);
    CHECK(raw[14 * 16] == 0xCD);
    CHECK(raw[14 * 16 + 1] == 0xAB);
    CHECK(raw[14 * 16 + 5] == 0x8E);
}

TEST_CASE("flat code and data descriptors match the well-known 64-bit GDT values") {
    STATIC_REQUIRE(segment_descriptor::code64(privilege_level::ring0).raw == 0x00AF'9B00'0000'FFFF);
    STATIC_REQUIRE(segment_descriptor::data(privilege_level::ring0).raw == 0x00CF'9300'0000'FFFF);
    STATIC_REQUIRE(segment_descriptor::code64(privilege_level::ring3).raw == 0x00AF'FB00'0000'FFFF);
    STATIC_REQUIRE(segment_descriptor::data(privilege_level::ring3).raw == 0x00CF'F300'0000'FFFF);
    constexpr auto c = segment_descriptor::code64(privilege_level::ring0);
    STATIC_REQUIRE(c.long_mode());
    STATIC_REQUIRE(!c.default_size());
    STATIC_REQUIRE(c.granularity());
    STATIC_REQUIRE(c.descriptor_type());
    STATIC_REQUIRE(c.limit() == 0xFFFFF);
    STATIC_REQUIRE(c.base() == 0);
    STATIC_REQUIRE(segment_descriptor::null().raw == 0);
}

TEST_CASE("a segment descriptor splits base 31:0 and limit 19:0 across Figure 3-8's fields") {
    segment_descriptor d;
    d.set_base(0xAABBCCDD);
    d.set_limit(0x12345);
    CHECK(d.raw == 0xAA01'00BB'CCDD'2345);
    CHECK(d.base() == 0xAABBCCDD);
    CHECK(d.limit() == 0x12345);
}

TEST_CASE("a 64-bit TSS descriptor splits its base over four fields, type 9 available") {
    constexpr auto d = tss_descriptor::make(0xFFFFFFFF80123456, tss_limit);
    // limit 0x67 | base 15:0 | base 23:16 | P=1 DPL=0 S=0 type=9 | G=0 limit 19:16=0 | base 31:24
    STATIC_REQUIRE(d.low == 0x8000'8912'3456'0067);
    STATIC_REQUIRE(d.high == 0xFFFF'FFFF);
    STATIC_REQUIRE(d.base() == 0xFFFFFFFF80123456);
    STATIC_REQUIRE(d.limit() == 103);
    STATIC_REQUIRE(d.type() == system_type::tss_available);
    STATIC_REQUIRE(!d.busy());
    STATIC_REQUIRE(!d.granularity());
}

TEST_CASE("LTR's busy type 0xB is read back and survives a base change") {
    auto d = tss_descriptor::make(0x1000, tss_limit);
    d.low |= std::uint64_t{0x2} << 40;  // what the CPU writes on LTR
    CHECK(d.busy());
    CHECK(d.type() == system_type::tss_busy);
    d.set_base(0x0000'7FFF'FFFF'F000);
    CHECK(d.busy());
    CHECK(d.base() == 0x0000'7FFF'FFFF'F000);
    CHECK(d.limit() == 103);
    CHECK(((d.high >> 40) & 0x1F) == 0);  // bits 12:8 of the upper dword must be zero
}

TEST_CASE("the 64-bit TSS is 104 bytes with RSP0 at 4, IST1 at 36 and the I/O map base at 102") {
    STATIC_REQUIRE(sizeof(task_state_segment) == 104);
    task_state_segment t;
    t.rsp[0] = 0x1122334455667788;
    t.rsp[2] = 0x0102030405060708;
    t.ist[0] = 0xA1A2A3A4A5A6A7A8;
    t.ist[6] = 0xB1B2B3B4B5B6B7B8;
    t.io_map_base = tss_no_io_bitmap;
    const auto b = bytes_of(t);
    for (int i = 0; i < 4; ++i) CHECK(b[i] == 0);
    CHECK(b[4] == 0x88);
    CHECK(b[11] == 0x11);
    CHECK(b[20] == 0x08);
    CHECK(b[27] == 0x01);
    for (int i = 28; i < 36; ++i) CHECK(b[i] == 0);
    CHECK(b[36] == 0xA8);
    CHECK(b[43] == 0xA1);
    CHECK(b[84] == 0xB8);
    CHECK(b[91] == 0xB1);
    for (int i = 92; i < 102; ++i) CHECK(b[i] == 0);
    CHECK(b[102] == 104);
    CHECK(b[103] == 0);
}

TEST_CASE("the LGDT/LIDT image is a 2-byte limit followed by the 8-byte base") {
    const auto r = table_register(0xFFFF800000001000, sizeof(idt));
    CHECK(copy_of(r.limit) == 0x0FFF);
    CHECK(copy_of(r.base) == 0xFFFF800000001000);
    const auto b = bytes_of(r);
    const std::array<unsigned char, 10> expected{0xFF, 0x0F, 0x00, 0x10, 0x00, 0x00, 0x00, 0x80, 0xFF, 0xFF};
    CHECK(b == expected);
}

TEST_CASE("a GDT selector carries index, table indicator and RPL") {
    STATIC_REQUIRE(segment_selector::gdt(3, privilege_level::ring3).value == 0x1B);
    STATIC_REQUIRE(segment_selector{0x1B}.index() == 3);
    STATIC_REQUIRE(segment_selector{0x1B}.rpl() == privilege_level::ring3);
    STATIC_REQUIRE(!segment_selector{0x1B}.table_indicator());
    STATIC_REQUIRE(segment_selector{0x1F}.table_indicator());
}
