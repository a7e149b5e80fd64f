// Entry encoding bit by bit, against values worked out by hand from the SDM:
// vol. 3A, 4.5, Tables 4-14 to 4-20 (PML5E, PML4E, PDPTE mapping a 1 GiB page
// or referencing a PD, PDE mapping a 2 MiB page or referencing a PT, and
// Table 4-20, the PTE mapping a 4 KiB page). Every expected value below is a
// literal, not a call into the code under test.
#include <catch2/catch.hpp>

#include <cstdint>

#include "asreloc/x86_64/entry.hpp"

using namespace asreloc;
using namespace asreloc::x86_64;

namespace {

constexpr std::uint64_t bit(unsigned n) { return std::uint64_t{1} << n; }

constexpr unsigned pte = 1;
constexpr unsigned pde = 2;
constexpr unsigned pdpte = 3;
constexpr unsigned pml4e = 4;
constexpr unsigned pml5e = 5;

}  // namespace

TEST_CASE("each flag accessor reads exactly its SDM bit") {
    struct flag {
        const char* name;
        unsigned position;
        bool (entry::*read)() const noexcept;
    };
    const flag flags[] = {
        {"P", 0, &entry::present},
        {"R/W", 1, &entry::read_write},
        {"U/S", 2, &entry::user_supervisor},
        {"PWT", 3, &entry::page_write_through},
        {"PCD", 4, &entry::page_cache_disable},
        {"A", 5, &entry::accessed},
        {"D", 6, &entry::dirty},
        {"G", 8, &entry::global},
        {"XD", 63, &entry::execute_disable},
    };
    for (const auto& f : flags) {
        INFO(f.name);
        CHECK((entry{bit(f.position)}.*f.read)());
        CHECK_FALSE((entry{~bit(f.position)}.*f.read)());
        for (const auto& other : flags)
            if (other.position != f.position) CHECK_FALSE((entry{bit(other.position)}.*f.read)());
    }
}

TEST_CASE("the bit constants sit where the SDM tables put them") {
    CHECK(bits::present == 0x1);
    CHECK(bits::read_write == 0x2);
    CHECK(bits::user_supervisor == 0x4);
    CHECK(bits::page_write_through == 0x8);
    CHECK(bits::page_cache_disable == 0x10);
    CHECK(bits::accessed == 0x20);
    CHECK(bits::dirty == 0x40);
    CHECK(bits::page_size == 0x80);
    CHECK(bits::pat_4k == 0x80);
    CHECK(bits::global == 0x100);
    CHECK(bits::pat_large == 0x1000);
    CHECK(bits::protection_key == 0x7800'0000'0000'0000);
    CHECK(bits::execute_disable == 0x8000'0000'0000'0000);
    CHECK(bits::address == 0x000f'ffff'ffff'f000);
}

TEST_CASE("a PTE mapping a 4 KiB page with every attribute set encodes as worked out from Table 4-20") {
    const attributes a{.writable = true,
                       .user = true,
                       .executable = false,
                       .global = true,
                       .memory_type = 7,
                       .protection_key = 0xa};
    // P R/W U/S PWT PCD PAT(7) G = 0x19f; address 51:12; key 1010b in 62:59; XD.
    const auto e = make_leaf(pte, phys_addr{0x0000'1234'5678'9000}, a);
    CHECK(e.raw() == 0xd000'1234'5678'919f);
    CHECK(e.is_leaf(pte));
    CHECK(e.leaf_address(pte) == phys_addr{0x0000'1234'5678'9000});
    CHECK(e.protection_key() == 0xa);
    CHECK(e.memory_type(pte) == 7);
    CHECK(e.leaf_attributes(pte) == a);
}

TEST_CASE("a PTE with nothing but presence is just P and the address") {
    const auto e = make_leaf(pte, phys_addr{0x0000'000f'ffff'f000}, attributes{.executable = true});
    CHECK(e.raw() == 0x0000'000f'ffff'f001);
}

TEST_CASE("a PDE mapping a 2 MiB page sets PS at bit 7 and PAT at bit 12 as in Table 4-18") {
    // memory type 4 = PAT only; read-only, supervisor, executable.
    const auto e = make_leaf(pde, phys_addr{0x0000'0004'0060'0000}, attributes{.executable = true, .memory_type = 4});
    CHECK(e.raw() == 0x0000'0004'0060'1081);
    CHECK(e.is_leaf(pde));
    CHECK(e.pat(pde));
    CHECK(e.leaf_address(pde) == phys_addr{0x0000'0004'0060'0000});  // bit 12 is PAT, not address
    CHECK(e.memory_type(pde) == 4);
}

TEST_CASE("a PDPTE mapping a 1 GiB page encodes as worked out from Table 4-16") {
    const attributes a{.writable = true, .executable = false, .memory_type = 5, .protection_key = 15};
    // P R/W PWT PS PAT(12) = 0x108b; key 1111b in 62:59; XD.
    const auto e = make_leaf(pdpte, phys_addr{0x0000'0080'4000'0000}, a);
    CHECK(e.raw() == 0xf800'0080'4000'108b);
    CHECK(e.is_leaf(pdpte));
    CHECK(e.leaf_address(pdpte) == phys_addr{0x0000'0080'4000'0000});
    CHECK(e.leaf_attributes(pdpte) == a);
}

TEST_CASE("the accessed and dirty arguments set A (bit 5) and D (bit 6)") {
    const phys_addr f{0x5000};
    const attributes x{.executable = true};
    CHECK(make_leaf(pte, f, x, true, false).raw() == 0x5021);
    CHECK(make_leaf(pte, f, x, false, true).raw() == 0x5041);
    CHECK(make_leaf(pde, phys_addr{0x20'0000}, x, true, true).raw() == 0x20'00e1);
}

TEST_CASE("PAT sits at bit 7 in a PTE and at bit 12 in 2 MiB and 1 GiB entries") {
    const attributes pat_only{.executable = true, .memory_type = 4};
    CHECK(make_leaf(pte, phys_addr{0}, pat_only).raw() == 0x81);
    CHECK(make_leaf(pde, phys_addr{0}, pat_only).raw() == 0x1081);
    CHECK(make_leaf(pdpte, phys_addr{0}, pat_only).raw() == 0x1081);
    // Reading: bit 7 is PAT only at level 1; in a PDE/PDPTE it is PS.
    CHECK(entry{0x80}.pat(pte));
    CHECK_FALSE(entry{0x80}.pat(pde));
    CHECK_FALSE(entry{0x80}.pat(pdpte));
    CHECK(entry{0x1000}.pat(pde));
    CHECK(entry{0x1000}.pat(pdpte));
    CHECK_FALSE(entry{0x1000}.pat(pte));  // bit 12 of a PTE is an address bit
    CHECK(entry{0x1001}.leaf_address(pte) == phys_addr{0x1000});
}

TEST_CASE("memory type index 0 to 7 maps to PAT, PCD and PWT at every leaf level") {
    // index -> bits, by hand: PWT = bit 3 (index bit 0), PCD = bit 4 (index
    // bit 1), PAT = bit 7 in a PTE or bit 12 in a large leaf (index bit 2).
    const std::uint64_t in_pte[8] = {0x00, 0x08, 0x10, 0x18, 0x80, 0x88, 0x90, 0x98};
    const std::uint64_t in_large[8] = {0x0000, 0x0008, 0x0010, 0x0018, 0x1000, 0x1008, 0x1010, 0x1018};
    const std::uint64_t caching = 0x1098;
    for (std::uint8_t index = 0; index < 8; ++index) {
        INFO("memory type " << int{index});
        const attributes a{.executable = true, .memory_type = index};
        const auto small = make_leaf(pte, phys_addr{0}, a);
        const auto mid = make_leaf(pde, phys_addr{0}, a);
        const auto big = make_leaf(pdpte, phys_addr{0}, a);
        CHECK((small.raw() & caching) == in_pte[index]);
        CHECK((mid.raw() & caching & ~bits::page_size) == in_large[index]);
        CHECK((big.raw() & caching & ~bits::page_size) == in_large[index]);
        CHECK(small.memory_type(pte) == index);
        CHECK(mid.memory_type(pde) == index);
        CHECK(big.memory_type(pdpte) == index);
        CHECK(entry{in_pte[index]}.memory_type(pte) == index);
        CHECK(entry{in_large[index] | bits::page_size}.memory_type(pde) == index);
    }
}

TEST_CASE("the protection key 0 to 15 goes to bits 62:59 and touches nothing else") {
    for (std::uint8_t key = 0; key < 16; ++key) {
        INFO("key " << int{key});
        const auto e = make_leaf(pte, phys_addr{0}, attributes{.executable = true, .protection_key = key});
        CHECK(e.raw() == (0x1 | (std::uint64_t{key} << 59)));
        CHECK(e.protection_key() == key);
    }
    CHECK(entry{0x7800'0000'0000'0000}.protection_key() == 15);
    CHECK(entry{0x8400'0000'0000'0000}.protection_key() == 0);  // bits 63 and 58 are not the key
}

TEST_CASE("the address field of a leaf is bits 51:12, 51:21 or 51:30 by level") {
    CHECK(leaf_address_mask(pte) == 0x000f'ffff'ffff'f000);
    CHECK(leaf_address_mask(pde) == 0x000f'ffff'ffe0'0000);
    CHECK(leaf_address_mask(pdpte) == 0x000f'ffff'c000'0000);
    const entry all{~std::uint64_t{0}};
    CHECK(all.leaf_address(pte) == phys_addr{0x000f'ffff'ffff'f000});
    CHECK(all.leaf_address(pde) == phys_addr{0x000f'ffff'ffe0'0000});
    CHECK(all.leaf_address(pdpte) == phys_addr{0x000f'ffff'c000'0000});
    CHECK(all.table_address() == phys_addr{0x000f'ffff'ffff'f000});
}

TEST_CASE("make_leaf never sets an ignored or reserved bit, whatever the attributes") {
    // Ignored 11:9 and 58:52 in every leaf; reserved 20:13 in a 2 MiB leaf and
    // 29:13 in a 1 GiB leaf (the address is below them, PAT is bit 12).
    const std::uint64_t ignored = 0x07f0'0000'0000'0e00;
    const std::uint64_t reserved_2m = 0x001f'e000;
    const std::uint64_t reserved_1g = 0x3fff'e000;
    const phys_addr top_frame{0x000f'ffff'c000'0000};  // every address bit a 1 GiB leaf has
    for (unsigned combo = 0; combo < 2048; ++combo) {
        const attributes a{.writable = (combo & 1) != 0,
                           .user = (combo & 2) != 0,
                           .executable = (combo & 4) != 0,
                           .global = (combo & 8) != 0,
                           .memory_type = static_cast<std::uint8_t>((combo >> 4) & 7),
                           .protection_key = static_cast<std::uint8_t>(combo >> 7)};
        for (unsigned level = pte; level <= pdpte; ++level) {
            const auto e = make_leaf(level, top_frame, a, true, true);
            CHECK((e.raw() & ignored) == 0);
            if (level == pde) CHECK((e.raw() & reserved_2m) == 0);
            if (level == pdpte) CHECK((e.raw() & reserved_1g) == 0);
            CHECK(e.leaf_attributes(level) == a);
            CHECK(e.leaf_address(level) == top_frame);
        }
    }
}

TEST_CASE("make_leaf drops frame bits below the page size and above bit 51") {
    CHECK(make_leaf(pde, phys_addr{0x0000'0000'0060'1000}, attributes{.executable = true}).raw() == 0x0060'0081);
    CHECK(make_leaf(pte, phys_addr{0xfff0'0000'0000'1000}, attributes{.executable = true}).raw() == 0x1001);
}

TEST_CASE("a table entry is present, writable, user and executable, with PS clear, as Tables 4-14 to 4-19 allow") {
    const auto e = make_table_entry(phys_addr{0x000f'ffff'ffff'f000});
    CHECK(e.raw() == 0x000f'ffff'ffff'f007);
    CHECK(e.table_address() == phys_addr{0x000f'ffff'ffff'f000});
    CHECK(is_permissive_table_entry(e));
    CHECK_FALSE(is_permissive_table_entry(e.without(bits::read_write)));
    CHECK_FALSE(is_permissive_table_entry(e.without(bits::user_supervisor)));
    CHECK_FALSE(is_permissive_table_entry(e.with(bits::execute_disable)));
    for (unsigned level = pde; level <= pml5e; ++level) CHECK_FALSE(e.is_leaf(level));
}

TEST_CASE("PS makes a PDE or PDPTE a leaf but never a PML4E or PML5E, and every PTE is a leaf") {
    const entry ps{0x81};
    CHECK(ps.is_leaf(pde));
    CHECK(ps.is_leaf(pdpte));
    CHECK_FALSE(ps.is_leaf(pml4e));  // bit 7 is reserved there
    CHECK_FALSE(ps.is_leaf(pml5e));
    CHECK(entry{0x1}.is_leaf(pte));
    CHECK(entry{0x0}.is_leaf(pte));
    CHECK_FALSE(entry{0x1}.is_leaf(pde));
}

TEST_CASE("with and without set and clear exactly the bits given") {
    const entry e{0x1003};
    CHECK(e.with(bits::execute_disable).raw() == 0x8000'0000'0000'1003);
    CHECK(e.without(bits::read_write).raw() == 0x1001);
    CHECK(e.without(bits::dirty).raw() == 0x1003);
}

TEST_CASE("attributes outside 0..7 and 0..15 are not encodable") {
    CHECK(encodable(attributes{.memory_type = 7, .protection_key = 15}));
    CHECK_FALSE(encodable(attributes{.memory_type = 8}));
    CHECK_FALSE(encodable(attributes{.protection_key = 16}));
}

TEST_CASE("effective rights AND R/W and U/S and OR XD along a walk") {
    const entry permissive{0x7};
    const entry no_write{0x5};
    const entry supervisor{0x3};
    const entry no_execute{0x8000'0000'0000'0007};

    const effective_rights start;
    CHECK(start.writable);
    CHECK(start.user);
    CHECK(start.executable);

    const auto r = start.through(permissive).through(no_write).through(permissive);
    CHECK_FALSE(r.writable);  // a later R/W = 1 does not undo an earlier 0
    CHECK(r.user);
    CHECK(r.executable);

    const auto u = start.through(supervisor).through(permissive);
    CHECK(u.writable);
    CHECK_FALSE(u.user);

    const auto x = start.through(no_execute).through(permissive);
    CHECK_FALSE(x.executable);
    CHECK(x.writable);

    const attributes leaf{.writable = true, .user = true, .executable = true, .global = true, .memory_type = 6,
                          .protection_key = 3};
    const auto combined = start.through(no_write).through(no_execute).apply_to(leaf);
    CHECK(combined == attributes{.writable = false, .user = true, .executable = false, .global = true,
                                 .memory_type = 6, .protection_key = 3});
    // Permissive ancestors leave the leaf's own rights as they are, denials included.
    const attributes denied{.writable = false, .user = false, .executable = false};
    CHECK(start.through(permissive).apply_to(denied) == denied);
}

TEST_CASE("the bits a leaf leaves to software are 11:9 and 58:52") {
    CHECK(bits::software == 0x07f0'0000'0000'0e00);
    CHECK((bits::software & (bits::address | bits::protection_key | bits::execute_disable | 0x1ff)) == 0);
}

TEST_CASE("a piece of a large leaf keeps every bit but the address, moving PAT to bit 7 in a PTE") {
    // 2 MiB leaf: P R/W PS PAT(12), software bits 9 and 58, XD, frame 0x4060'0000.
    const entry big{0x8400'0000'4060'1283};
    CHECK(piece_of(big, pde, 0).raw() == 0x8400'0000'4060'0283);  // P R/W PAT(7), PS gone
    CHECK(piece_of(big, pde, 5).raw() == 0x8400'0000'4060'5283);
    CHECK(piece_of(big, pde, 511).raw() == 0x8400'0000'407f'f283);
    // 1 GiB leaf: P PS PAT(12); its 2 MiB pieces keep PS and PAT at bit 12.
    const entry huge{0x0000'0080'4000'1081};
    CHECK(piece_of(huge, pdpte, 2).raw() == 0x0000'0080'4040'1081);
    // A and D of the large page go to every piece.
    CHECK(piece_of(entry{0x0000'0000'0020'00e1}, pde, 1).raw() == 0x0000'0000'0020'1061);
}

TEST_CASE("whole_of folds pieces back into the large leaf they came from") {
    // PTE: P R/W A D PAT(7), software bits 9 and 58, XD, frame 0x4060'0000.
    const entry first{0x8400'0000'4060'02e3};
    CHECK(whole_of(first, pte, true, false).raw() == 0x8400'0000'4060'12a3);  // PS, PAT(12), A only
    CHECK(whole_of(entry{0x0000'0080'4000'1081}, pde, false, true).raw() == 0x0000'0080'4000'10c1);  // D only
    for (const std::uint64_t raw : {std::uint64_t{0x8400'0000'4060'1283}, std::uint64_t{0x7800'000f'ffe0'01e7},
                                    std::uint64_t{0x0000'0000'0020'0081}}) {
        const entry big{raw};
        CHECK(whole_of(piece_of(big, pde, 0), pte, big.accessed(), big.dirty()) == big);
    }
    const entry huge{0xb800'0080'4000'1ee7};
    CHECK(whole_of(piece_of(huge, pdpte, 0), pde, huge.accessed(), huge.dirty()) == huge);
}
