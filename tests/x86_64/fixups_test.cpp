// The x86-64 fixups move exactly what points into the stub, refuse moves they
// could not undo, and apply(to, from) restores every byte.
#include <asreloc/x86_64/fixups.hpp>

#include <array>
#include <cstdlib>
#include <cstring>
#include <random>

#include <catch2/catch.hpp>

// Catch binds what it checks to a reference; members of the packed SDM
// structures must be copied out first.
namespace {
template <class T>
T copy_of(T v) {
    return v;
}
}  // namespace

using namespace asreloc;
using namespace asreloc::x86_64;

namespace {

constexpr std::uint64_t stub_size = 0x4000;
constexpr virt_addr old_base{0xFFFF'8000'0010'0000};
constexpr virt_addr new_base{0x0000'7000'0000'0000};

std::uint64_t seed() {
    if (const char* s = std::getenv("ASRELOC_SEED")) return std::strtoull(s, nullptr, 0);
    return (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
}

template <class T>
bool same_bytes(const T& a, const T& b) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
}

idt_gate gate_to(std::uint64_t offset, bool present = true) {
    auto g = idt_gate::make(offset, segment_selector{8}, system_type::interrupt_gate, privilege_level::ring0, 1);
    g.set_present(present);
    return g;
}

}  // namespace

TEST_CASE("the IDT fixup moves the present gates that point into the stub and only those") {
    idt table{};
    table[0] = gate_to(old_base.value());                      // first byte of the stub
    table[1] = gate_to(old_base.value() + stub_size - 1);      // last byte of the stub
    table[2] = gate_to(old_base.value() + stub_size);          // first byte after it
    table[3] = gate_to(old_base.value() - 1);                  // just below it
    table[4] = gate_to(old_base.value() + 0x100, false);       // not present: never read
    table[5] = gate_to(0xFFFF'FFFF'8000'1234);                 // a monitor handler elsewhere
    const idt before = table;

    idt_fixup_context ctx{table.data(), table.size(), stub_size};
    const fixup f = idt_fixup(ctx);
    REQUIRE(f(old_base, new_base));
    CHECK(table[0].offset() == new_base.value());
    CHECK(table[1].offset() == new_base.value() + stub_size - 1);
    CHECK(table[2] == before[2]);
    CHECK(table[3] == before[3]);
    CHECK(table[4] == before[4]);
    CHECK(table[5] == before[5]);
    // Only the offset fields changed.
    CHECK(table[0].selector() == before[0].selector());
    CHECK(table[0].ist() == 1);
    CHECK(table[0].type() == system_type::interrupt_gate);
    for (std::size_t i = 6; i < table.size(); ++i) CHECK(table[i] == before[i]);

    REQUIRE(f(new_base, old_base));
    CHECK(same_bytes(table, before));
}

TEST_CASE("the IDT fixup refuses, unchanged, when a gate that stays already points into the new placement") {
    idt table{};
    table[0] = gate_to(old_base.value() + 0x10);
    table[7] = gate_to(new_base.value() + 0x20);  // would be dragged back by the reverse move
    const idt before = table;
    idt_fixup_context ctx{table.data(), table.size(), stub_size};
    const auto r = idt_fixup(ctx)(old_base, new_base);
    REQUIRE(failed_with(r, error::fixup_refused));
    CHECK(same_bytes(table, before));
}

TEST_CASE("the IDT fixup handles a move by less than the stub size and reverses it exactly") {
    idt table{};
    for (std::size_t i = 0; i < 32; ++i) table[i] = gate_to(old_base.value() + i * 0x100);
    table[40] = gate_to(old_base.value() + stub_size + 0x1000);  // outside both windows
    const idt before = table;
    const virt_addr nearby = old_base + 0x1000;  // overlapping placement
    idt_fixup_context ctx{table.data(), table.size(), stub_size};
    REQUIRE(idt_fixup(ctx)(old_base, nearby));
    for (std::size_t i = 0; i < 32; ++i) CHECK(table[i].offset() == before[i].offset() + 0x1000);
    CHECK(table[40] == before[40]);
    REQUIRE(idt_fixup(ctx)(nearby, old_base));
    CHECK(same_bytes(table, before));
}

TEST_CASE("random IDTs: a forward move either refuses untouched or its reverse restores every byte") {
    const auto s = seed();
    INFO("seed " << s);
    std::mt19937_64 rng(s);
    for (int round = 0; round < 200; ++round) {
        const std::uint64_t size = 0x1000 * (1 + rng() % 4);
        const std::uint64_t from = 0x10'0000 + 0x1000 * (rng() % 16);
        const std::uint64_t to = 0x10'0000 + 0x1000 * (rng() % 16);
        idt table{};
        for (auto& g : table) {
            const std::uint64_t off = 0x10'0000 + rng() % 0x12'000;  // around both windows
            g = gate_to(off, rng() % 4 != 0);
        }
        const idt before = table;
        idt_fixup_context ctx{table.data(), table.size(), size};
        const auto r = idt_fixup(ctx)(virt_addr{from}, virt_addr{to});
        if (!r) {
            CHECK(failed_with(r, error::fixup_refused));
            CHECK(same_bytes(table, before));
            continue;
        }
        for (std::size_t i = 0; i < table.size(); ++i) {
            const bool in_stub = before[i].present() && before[i].offset() - from < size;
            CHECK(table[i].offset() == (in_stub ? before[i].offset() - from + to : before[i].offset()));
        }
        REQUIRE(idt_fixup(ctx)(virt_addr{to}, virt_addr{from}));
        CHECK(same_bytes(table, before));
    }
}

TEST_CASE("the TSS descriptor fixup moves a base inside the stub and keeps the busy type") {
    auto d = tss_descriptor::make(old_base.value() + 0x2000, tss_limit);
    d.set_type(system_type::tss_busy);
    const auto before = d;
    tss_descriptor_fixup_context ctx{&d, stub_size};
    REQUIRE(tss_descriptor_fixup(ctx)(old_base, new_base));
    CHECK(d.base() == new_base.value() + 0x2000);
    CHECK(d.busy());
    CHECK(d.limit() == tss_limit);
    CHECK(d.low != before.low);
    CHECK(d.high != before.high);
    REQUIRE(tss_descriptor_fixup(ctx)(new_base, old_base));
    CHECK(same_bytes(d, before));
}

TEST_CASE("the TSS descriptor fixup leaves a base outside the stub alone") {
    auto d = tss_descriptor::make(0xFFFF'FFFF'8000'0000, tss_limit);
    const auto before = d;
    tss_descriptor_fixup_context ctx{&d, stub_size};
    REQUIRE(tss_descriptor_fixup(ctx)(old_base, new_base));
    CHECK(same_bytes(d, before));
    auto blocking = tss_descriptor::make(new_base.value(), tss_limit);
    const auto blocking_before = blocking;
    tss_descriptor_fixup_context bctx{&blocking, stub_size};
    CHECK(failed_with(tss_descriptor_fixup(bctx)(old_base, new_base), error::fixup_refused));
    CHECK(same_bytes(blocking, blocking_before));
}

TEST_CASE("the GDTR and IDTR image fixups move the base and keep the limit") {
    pseudo_descriptor gdtr = table_register(old_base.value() + 0x1000, 7 * 8);
    pseudo_descriptor idtr = table_register(old_base.value(), sizeof(idt));
    pseudo_descriptor outside = table_register(0x5000, sizeof(idt));
    const auto g0 = gdtr;
    const auto i0 = idtr;
    const auto o0 = outside;
    table_register_fixup_context gc{&gdtr, stub_size}, ic{&idtr, stub_size}, oc{&outside, stub_size};
    REQUIRE(table_register_fixup(gc)(old_base, new_base));
    REQUIRE(table_register_fixup(ic)(old_base, new_base));
    REQUIRE(table_register_fixup(oc)(old_base, new_base));
    CHECK(copy_of(gdtr.base) == new_base.value() + 0x1000);
    CHECK(copy_of(gdtr.limit) == 55);
    CHECK(copy_of(idtr.base) == new_base.value());
    CHECK(copy_of(idtr.limit) == 0xFFF);
    CHECK(same_bytes(outside, o0));
    REQUIRE(table_register_fixup(gc)(new_base, old_base));
    REQUIRE(table_register_fixup(ic)(new_base, old_base));
    CHECK(same_bytes(gdtr, g0));
    CHECK(same_bytes(idtr, i0));
}

TEST_CASE("the TSS stack fixup moves stack tops in from base (exclusive) to base + size (inclusive) and leaves zero and outside slots") {
    task_state_segment t;
    t.rsp[0] = old_base.value() + stub_size;  // a stack at the very end of the stub
    t.rsp[1] = 0;                             // unused
    t.rsp[2] = old_base.value();              // a stack below the stub: not ours
    t.ist[0] = old_base.value() + 0x3000;
    t.ist[1] = 0xFFFF'FFFF'8010'0000;         // a monitor stack elsewhere
    t.ist[6] = old_base.value() + 1;
    t.io_map_base = tss_no_io_bitmap;
    const auto before = t;
    tss_stacks_fixup_context ctx{&t, stub_size};
    REQUIRE(tss_stacks_fixup(ctx)(old_base, new_base));
    CHECK(copy_of(t.rsp[0]) == new_base.value() + stub_size);
    CHECK(copy_of(t.rsp[1]) == 0);
    CHECK(copy_of(t.rsp[2]) == old_base.value());
    CHECK(copy_of(t.ist[0]) == new_base.value() + 0x3000);
    CHECK(copy_of(t.ist[1]) == 0xFFFF'FFFF'8010'0000);
    CHECK(copy_of(t.ist[2]) == 0);
    CHECK(copy_of(t.ist[6]) == new_base.value() + 1);
    CHECK(copy_of(t.io_map_base) == tss_no_io_bitmap);
    REQUIRE(tss_stacks_fixup(ctx)(new_base, old_base));
    CHECK(same_bytes(t, before));
}

TEST_CASE("a stub placed at address 0 moves its stacks but never the unused zero slots") {
    task_state_segment t;
    t.rsp[0] = stub_size;
    const auto before = t;
    tss_stacks_fixup_context ctx{&t, stub_size};
    REQUIRE(tss_stacks_fixup(ctx)(virt_addr{0}, new_base));
    CHECK(copy_of(t.rsp[0]) == new_base.value() + stub_size);
    CHECK(copy_of(t.rsp[1]) == 0);
    CHECK(copy_of(t.ist[3]) == 0);
    REQUIRE(tss_stacks_fixup(ctx)(new_base, virt_addr{0}));
    CHECK(same_bytes(t, before));
}

TEST_CASE("the TSS stack fixup refuses, unchanged, when a stack that stays has its top in the new placement") {
    task_state_segment t;
    t.rsp[0] = old_base.value() + 0x1000;
    t.ist[4] = new_base.value() + stub_size;
    const auto before = t;
    tss_stacks_fixup_context ctx{&t, stub_size};
    CHECK(failed_with(tss_stacks_fixup(ctx)(old_base, new_base), error::fixup_refused));
    CHECK(same_bytes(t, before));
}
