// The x86-64 fixups move exactly what points into the stub, refuse moves they
// could not undo, and apply(to, from) restores every byte.
#include <asreloc/x86_64/fixups.hpp>
#include <asreloc/x86_64/stub_layout.hpp>

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

#include <catch2/catch.hpp>

#include "support/packed.hpp"

using asreloc::test::copy_of;

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

TEST_CASE("the IDT fixup refusing at a late gate puts back the gates it had moved, overlapping placements too") {
    // The stub moves up by one page: its windows overlap. The last gate
    // points past the stub into the new window, so the move is refused
    // after every gate before it has been moved (some into the overlap).
    idt table{};
    for (std::size_t i = 0; i + 1 < table.size(); ++i)
        table[i] = gate_to(old_base.value() + (i * 0x40) % stub_size, i % 5 != 0);
    table[table.size() - 1] = gate_to(old_base.value() + stub_size + 0x10);
    const idt before = table;
    idt_fixup_context ctx{table.data(), table.size(), stub_size};
    REQUIRE(failed_with(idt_fixup(ctx)(old_base, old_base + 0x1000), error::fixup_refused));
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

// ---------------------------------------------------------------------------
// The very top of the 64-bit space.

namespace {

// The tables as an embedder builds them for a stub whose base is `base`;
// base + size wraps to 0 at the top, as the CPU's RSP does.
void build_tables(stub_tables& t, const stub_layout& layout, virt_addr base) {
    t.place(base);
    for (std::size_t v = 0; v < 32; ++v)
        t.idt_gates[v] = idt_gate::make(base.value() + layout.entry_code_offset() + 16 * v, kernel_code_selector,
                                        system_type::interrupt_gate, privilege_level::ring0, v == 8 ? 1 : 0);
    t.tss.rsp[0] = base.value() + layout.size();                 // the ring-0 stack: top of the data pages
    t.tss.ist[0] = base.value() + layout.data_offset() + 0x800;  // the double-fault stack
}

bool same_tables(const stub_tables& a, const stub_tables& b) { return std::memcmp(&a, &b, sizeof(stub_tables)) == 0; }

constexpr stub_layout top_layout{1, 2};
constexpr virt_addr top_base{0 - top_layout.size()};  // the stub's last byte is 2^64 - 1
constexpr virt_addr low_base{0x0000'0000'0040'0000};

}  // namespace

TEST_CASE("a stub moved to the very top of the 64-bit space has RSP0 = 0 and every table where the guest sees it") {
    auto t = std::make_unique<stub_tables>();
    auto original = std::make_unique<stub_tables>();
    auto expected = std::make_unique<stub_tables>();
    build_tables(*t, top_layout, low_base);
    build_tables(*expected, top_layout, top_base);
    std::memcpy(original.get(), t.get(), sizeof(stub_tables));
    stub_fixups fixups(*t, top_layout.size());
    const auto list = fixups.list();

    for (const auto& f : list) REQUIRE(f(low_base, top_base));
    CHECK(same_tables(*t, *expected));
    const std::uint64_t rsp0 = t->tss.rsp[0], ist1 = t->tss.ist[0];
    CHECK(rsp0 == 0);
    CHECK(ist1 == top_base.value() + top_layout.data_offset() + 0x800);
    // The first push (RSP is decremented first) lands in the stub's last data page, canonical.
    const virt_addr first_push{rsp0 - 8};
    CHECK(first_push.value() == 0xFFFF'FFFF'FFFF'FFF8);
    CHECK(first_push.is_canonical(48));
    CHECK(first_push - top_base >= top_layout.data_offset());
    CHECK(copy_of(t->tss.rsp[1]) == 0);  // unused slots stay unused
    CHECK(copy_of(t->tss.ist[1]) == 0);
    CHECK(t->gdt.tss.base() == top_base.value() + stub_tables::tss_offset());
    CHECK(copy_of(t->gdtr.base) == top_base.value() + stub_tables::gdt_offset());
    CHECK(copy_of(t->idtr.base) == top_base.value());
    CHECK(t->idt_gates[31].offset() == top_base.value() + top_layout.entry_code_offset() + 16 * 31);

    // Back, exactly (the manager's rollback) ...
    for (const auto& f : list) REQUIRE(f(top_base, low_base));
    CHECK(same_tables(*t, *original));
    // ... and a hop away from the top later on: RSP0 = 0 is still the stack in use and follows.
    for (const auto& f : list) REQUIRE(f(low_base, top_base));
    const virt_addr elsewhere{0xFFFF'8000'0020'0000};
    build_tables(*expected, top_layout, elsewhere);
    for (const auto& f : list) REQUIRE(f(top_base, elsewhere));
    CHECK(same_tables(*t, *expected));
}

TEST_CASE("a placement one byte past the top of the 64-bit space is refused as non-canonical, nothing written") {
    auto t = std::make_unique<stub_tables>();
    auto original = std::make_unique<stub_tables>();
    build_tables(*t, top_layout, low_base);
    std::memcpy(original.get(), t.get(), sizeof(stub_tables));
    stub_fixups fixups(*t, top_layout.size());
    const virt_addr past = top_base + 1;  // its end would be 2^64 + 1; RSP0 would wrap to 1
    for (const auto& f : fixups.list()) CHECK(failed_with(f(low_base, past), error::non_canonical));
    CHECK(same_tables(*t, *original));
    // The stack fixup alone, a page past: the stub's last page would wrap to address 0.
    task_state_segment tss;
    tss.rsp[0] = low_base.value() + top_layout.size();
    const auto before = tss;
    tss_stacks_fixup_context ctx{&tss, top_layout.size()};
    CHECK(failed_with(tss_stacks_fixup(ctx)(low_base, top_base + page_bytes), error::non_canonical));
    CHECK(same_bytes(tss, before));
}

TEST_CASE("a stack top at the end of the lower canonical half is refused with 4-level paging and kept with 5-level") {
    const std::uint64_t size = top_layout.size();
    const virt_addr below_hole{(std::uint64_t{1} << 47) - size};  // the stub's last byte is 2^47 - 1
    task_state_segment tss;
    tss.rsp[0] = low_base.value() + size;
    const auto before = tss;
    tss_stacks_fixup_context four{&tss, size, paging_mode::four_level};
    CHECK(failed_with(tss_stacks_fixup(four)(low_base, below_hole), error::non_canonical));
    CHECK(same_bytes(tss, before));
    tss_stacks_fixup_context five{&tss, size, paging_mode::five_level};
    REQUIRE(tss_stacks_fixup(five)(low_base, below_hole));
    CHECK(copy_of(tss.rsp[0]) == std::uint64_t{1} << 47);
    REQUIRE(tss_stacks_fixup(five)(below_hole, low_base));
    CHECK(same_bytes(tss, before));
}

TEST_CASE("a stub built at the very top needs its stacks named: unnamed, a zero pointer is ambiguous and refused") {
    const std::uint64_t size = top_layout.size();
    task_state_segment tss;
    tss.rsp[0] = 0;                                // the top of a stack ending at 2^64
    tss.ist[0] = top_base.value() + size - 0x800;  // IST1
    const auto before = tss;
    tss_stacks_fixup_context unnamed{&tss, size};
    CHECK(failed_with(tss_stacks_fixup(unnamed)(top_base, low_base), error::fixup_refused));
    CHECK(same_bytes(tss, before));
    CHECK_FALSE(unnamed.stacks_named);  // a refusal learns nothing

    tss_stacks_fixup_context named{&tss, size, paging_mode::four_level, tss_stack_set::rsp(0) | tss_stack_set::ist(1),
                                   true};
    REQUIRE(tss_stacks_fixup(named)(top_base, low_base));
    CHECK(copy_of(tss.rsp[0]) == low_base.value() + size);
    CHECK(copy_of(tss.ist[0]) == low_base.value() + size - 0x800);
    CHECK(copy_of(tss.rsp[1]) == 0);
    CHECK(copy_of(tss.ist[6]) == 0);
    REQUIRE(tss_stacks_fixup(named)(low_base, top_base));
    CHECK(same_bytes(tss, before));

    // The same with the whole stub: stub_fixups::name_stacks.
    auto t = std::make_unique<stub_tables>();
    auto expected = std::make_unique<stub_tables>();
    build_tables(*t, top_layout, top_base);
    build_tables(*expected, top_layout, low_base);
    stub_fixups fixups(*t, top_layout.size());
    fixups.name_stacks(tss_stack_set::rsp(0) | tss_stack_set::ist(1));
    for (const auto& f : fixups.list()) REQUIRE(f(top_base, low_base));
    CHECK(same_tables(*t, *expected));
}

TEST_CASE("the stack sets name RSP0-2 and IST1-7 in TSS order") {
    STATIC_REQUIRE(tss_stack_set::rsp(0).bits == 0x001);
    STATIC_REQUIRE(tss_stack_set::rsp(2).bits == 0x004);
    STATIC_REQUIRE(tss_stack_set::ist(1).bits == 0x008);
    STATIC_REQUIRE(tss_stack_set::ist(7).bits == 0x200);
    task_state_segment tss;
    tss.rsp[2] = 0x1000;
    tss.ist[6] = 0x2000;
    CHECK(tss_stack_set::nonzero_in(tss) == (tss_stack_set::rsp(2) | tss_stack_set::ist(7)));
    CHECK(stack_pointer(tss, 9) == 0x2000);
    set_stack_pointer(tss, 3, 0x3000);
    CHECK(copy_of(tss.ist[0]) == 0x3000);
}

TEST_CASE("random stacks near the top of the space: a move either refuses untouched or its reverse restores every byte") {
    const auto s = seed();
    INFO("seed " << s);
    std::mt19937_64 rng(s);
    const std::uint64_t size = 0x4000;
    const std::uint64_t region = 0 - 0x10'0000;  // the last MiB of the space; placements may also run past it
    for (int round = 0; round < 500; ++round) {
        const std::uint64_t from = region + 0x1000 * (rng() % 256);
        const std::uint64_t to = region + 0x1000 * (rng() % 258);  // up to two pages past the top
        task_state_segment tss;
        for (std::size_t i = 0; i < tss_stack_count; ++i) {
            if (rng() % 3 == 0) continue;  // unused
            set_stack_pointer(tss, i, rng() % 2 ? from + 1 + rng() % size : region + rng() % 0x10'0000);
        }
        const auto before = tss;
        CAPTURE(round, from, to);
        const bool from_fits = from + (size - 1) >= from, to_fits = to + (size - 1) >= to;
        tss_stacks_fixup_context ctx{&tss, size};
        const auto r = tss_stacks_fixup(ctx)(virt_addr{from}, virt_addr{to});
        if (!r) {
            CHECK(same_bytes(tss, before));
            if (!from_fits || !to_fits) CHECK(failed_with(r, error::non_canonical));
            else CHECK(failed_with(r, error::fixup_refused));
            continue;
        }
        CHECK((from_fits && to_fits));
        for (std::size_t i = 0; i < tss_stack_count; ++i) {
            const std::uint64_t v = stack_pointer(before, i);
            const bool ours = v != 0 && v - from - 1 < size;
            CHECK(stack_pointer(tss, i) == (ours ? v - from + to : v));
        }
        REQUIRE(tss_stacks_fixup(ctx)(virt_addr{to}, virt_addr{from}));
        CHECK(same_bytes(tss, before));
    }
}
