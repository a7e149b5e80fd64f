#include <catch2/catch.hpp>

#include <array>
#include <map>
#include <random>
#include <vector>

#include "absl/random/random.h"
#include "asreloc/hosted/hash_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/reference/page_table.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;

namespace {

std::vector<std::byte> page_of(std::uint8_t v) { return std::vector<std::byte>(page_bytes, std::byte{v}); }
mapping original_at(std::uint64_t va, std::uint64_t pa) {
    return mapping{.start = virt_addr{va}, .phys = phys_addr{pa}, .attrs = read_write};
}

}  // namespace

TEST_CASE("the hash store keeps pages, serves byte accesses, refuses bad input and restores") {
    WARN("hash_shadow_store bookkeeping (lower bound): " << hosted::hash_shadow_store::bookkeeping_bytes_per_page
                                                         << " B per page");
    hosted::hash_shadow_store store{2};
    const shadow_key a{0, virt_addr{0x1000}}, b{1, virt_addr{0x1000}}, c{0, virt_addr{0x3000}};
    CHECK(failed_with(store.insert({0, virt_addr{0x1008}}, original_at(0x1000, 0), page_of(0)), error::misaligned));
    REQUIRE(store.insert(a, original_at(0x1000, 0x9000), page_of(0xaa)).has_value());
    const mapping* kept = store.original(a);
    REQUIRE(store.insert(b, original_at(0x1000, 0x8000), page_of(0xbb)).has_value());
    CHECK(store.original(a) == kept);  // node map: stable across inserts
    CHECK(failed_with(store.insert(c, original_at(0x3000, 0), page_of(0)), error::shadow_store_full));
    CHECK(failed_with(store.insert(a, original_at(0x1000, 0), page_of(0)), error::overlaps));
    CHECK(store.size() == 2);
    std::array<std::byte, 2> out{};
    const std::array<std::byte, 1> in{std::byte{7}};
    REQUIRE(store.write(b, 4095, in).has_value());
    REQUIRE(store.read(b, 4094, out).has_value());
    CHECK(std::to_integer<int>(out[0]) == 0xbb);
    CHECK(std::to_integer<int>(out[1]) == 7);
    CHECK(failed_with(store.read(b, 4095, out), error::out_of_bounds));
    CHECK(failed_with(store.read(c, 0, out), error::not_mapped));

    test::sim_memory<2> mem;
    const auto frame = test::sim_memory<2>::base;
    REQUIRE(store.erase(a).has_value());
    REQUIRE(store.insert(a, original_at(0x1000, frame.value()), page_of(0x42)).has_value());
    REQUIRE(restore_content(store, a, mem).has_value());
    CHECK(std::to_integer<int>(mem.to_virt(frame)[100]) == 0x42);
    CHECK(store.original(a) == nullptr);
    CHECK(failed_with(store.erase(a), error::not_mapped));
}

TEST_CASE("the random victim works with absl::BitGen and never picks a pinned range") {
    absl::BitGen gen;
    random_victim<absl::BitGen> selector{gen};
    reference::page_table pt;
    std::array<const reference::page_table*, 1> spaces{&pt};
    const std::uint64_t base = 0x1000'0000;
    const std::vector<virt_range> pinned{virt_range::of(virt_addr{base + page_bytes}, 2 * page_bytes)};
    const victim_request r{.window = virt_range::of(virt_addr{base}, 8 * page_bytes), .pinned = pinned};
    std::map<std::uint64_t, int> seen;
    for (int i = 0; i < 4000; ++i) {
        auto v = selector.select(std::span<const reference::page_table* const>{spaces}, r);
        REQUIRE(v.has_value());
        CHECK_FALSE(v->overlaps(pinned[0]));
        seen[v->start().value()]++;
    }
    CHECK(seen.size() == 6);  // every eligible slot comes up in 4000 draws (miss chance ~6 * (5/6)^4000)
}
