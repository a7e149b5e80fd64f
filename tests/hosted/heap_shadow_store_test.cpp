#include <catch2/catch.hpp>

#include <malloc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <new>
#include <random>
#include <vector>

#include "absl/random/random.h"
#include "asreloc/hosted/heap_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/reference/page_table.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;

// Allocation failures on demand: every operator new of this program counts
// down `allocations_left` while it is not negative and throws at zero.
namespace {
long allocations_left = -1;
}  // namespace

// Every unaligned form is replaced, so that what one allocates the matching
// delete frees (sanitizers check the pairing).
void* operator new(std::size_t n) {
    if (allocations_left == 0) throw std::bad_alloc{};
    if (allocations_left > 0) --allocations_left;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc{};
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return ::operator new(n);
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

std::vector<std::byte> page_of(std::uint8_t v) { return std::vector<std::byte>(page_bytes, std::byte{v}); }
mapping original_at(std::uint64_t va, std::uint64_t pa) {
    return mapping{.start = virt_addr{va}, .phys = phys_addr{pa}, .attrs = read_write};
}

}  // namespace

TEST_CASE("the heap store keeps pages, serves byte accesses, refuses bad input and restores") {
    WARN("heap_shadow_store bookkeeping (lower bound): " << hosted::heap_shadow_store::bookkeeping_bytes_per_page
                                                         << " B per page");
    hosted::heap_shadow_store store{2};
    const shadow_key a{0, virt_addr{0x1000}}, b{1, virt_addr{0x1000}}, c{0, virt_addr{0x3000}};
    CHECK(failed_with(store.insert({0, virt_addr{0x1008}}, original_at(0x1000, 0), page_of(0)), error::misaligned));
    REQUIRE(store.insert(a, original_at(0x1000, 0x9000), page_of(0xaa)).has_value());
    const mapping* kept = store.original(a);
    REQUIRE(store.insert(b, original_at(0x1000, 0x8000), page_of(0xbb)).has_value());
    CHECK(store.original(a) == kept);  // slots never move: stable across inserts
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

namespace {

struct model_page {
    mapping original;
    std::vector<std::byte> bytes;
};

mapping page_mapping(std::uint64_t page, std::uint64_t salt) {
    return mapping{.start = virt_addr{page}, .phys = phys_addr{0x10'0000'0000 + salt * page_bytes}, .attrs = read_write};
}

}  // namespace

TEST_CASE("the heap store answers like a model over random inserts, erases, reads and writes in several spaces") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    constexpr std::size_t capacity = 100;  // not a multiple of the chunk: the last chunk is short
    hosted::heap_shadow_store store{capacity};
    std::map<shadow_key, model_page> model;
    std::map<shadow_key, const mapping*> seen;  // original() of each kept page when it went in
    const auto random_key = [&] {
        return shadow_key{static_cast<std::uint32_t>(rng() % 3), virt_addr{0x7000'0000 + page_bytes * (rng() % 160)}};
    };
    for (int step = 0; step < 20000; ++step) {
        const shadow_key k = random_key();
        CAPTURE(step, k.space, k.page.value());
        const auto it = model.find(k);
        switch (rng() % 4) {
        case 0: {  // insert
            std::vector<std::byte> bytes(page_bytes, std::byte{static_cast<std::uint8_t>(rng())});
            const mapping m = page_mapping(k.page.value(), rng() % 1000);
            const auto r = store.insert(k, m, bytes);
            if (it != model.end()) CHECK(failed_with(r, error::overlaps));
            else if (model.size() == capacity) CHECK(failed_with(r, error::shadow_store_full));
            else {
                REQUIRE(r.has_value());
                model[k] = {m, bytes};
                seen[k] = store.original(k);
            }
            break;
        }
        case 1: {  // erase
            const auto r = store.erase(k);
            if (it == model.end()) CHECK(failed_with(r, error::not_mapped));
            else {
                REQUIRE(r.has_value());
                model.erase(it);
                seen.erase(k);
            }
            break;
        }
        case 2: {  // read a random piece
            const std::uint64_t offset = rng() % page_bytes;
            std::vector<std::byte> out(rng() % (page_bytes - offset + 1));
            const auto r = store.read(k, offset, out);
            if (it == model.end()) CHECK(failed_with(r, error::not_mapped));
            else {
                REQUIRE(r.has_value());
                CHECK(std::equal(out.begin(), out.end(), it->second.bytes.begin() + static_cast<std::ptrdiff_t>(offset)));
            }
            break;
        }
        default: {  // write a random piece
            const std::uint64_t offset = rng() % page_bytes;
            std::vector<std::byte> in(rng() % (page_bytes - offset + 1), std::byte{static_cast<std::uint8_t>(rng())});
            const auto r = store.write(k, offset, in);
            if (it == model.end()) CHECK(failed_with(r, error::not_mapped));
            else {
                REQUIRE(r.has_value());
                std::copy(in.begin(), in.end(), it->second.bytes.begin() + static_cast<std::ptrdiff_t>(offset));
            }
            break;
        }
        }
        REQUIRE(store.size() == model.size());
        if (step % 500 == 0) {
            for (const auto& [key, page] : model) {
                const mapping* kept = store.original(key);
                REQUIRE(kept != nullptr);
                CHECK(kept == seen[key]);  // stable while the page is kept
                CHECK(*kept == page.original);
                std::vector<std::byte> out(page_bytes);
                REQUIRE(store.read(key, 0, out).has_value());
                CHECK(out == page.bytes);
            }
        }
    }
}

TEST_CASE("a full heap store reuses the slots it freed, and an emptied one starts over") {
    hosted::heap_shadow_store store{40};
    for (std::uint64_t i = 0; i < 40; ++i)
        REQUIRE(store.insert({1, virt_addr{i * page_bytes}}, page_mapping(i * page_bytes, i),
                             page_of(static_cast<std::uint8_t>(i)))
                    .has_value());
    CHECK(failed_with(store.insert({2, virt_addr{0}}, page_mapping(0, 0), page_of(0)), error::shadow_store_full));
    for (std::uint64_t i = 0; i < 40; i += 2) REQUIRE(store.erase({1, virt_addr{i * page_bytes}}).has_value());
    for (std::uint64_t i = 0; i < 20; ++i)
        REQUIRE(store.insert({2, virt_addr{i * page_bytes}}, page_mapping(i * page_bytes, 100 + i), page_of(0xee))
                    .has_value());
    CHECK(store.size() == 40);
    std::array<std::byte, 1> b{};
    for (std::uint64_t i = 1; i < 40; i += 2) {  // the pages that stayed kept their content
        REQUIRE(store.read({1, virt_addr{i * page_bytes}}, 4095, b).has_value());
        CHECK(std::to_integer<std::uint64_t>(b[0]) == i);
    }
    for (std::uint64_t i = 0; i < 40; ++i) {
        (void)store.erase({1, virt_addr{i * page_bytes}});
        (void)store.erase({2, virt_addr{i * page_bytes}});
    }
    CHECK(store.size() == 0);
    CHECK(store.original({1, virt_addr{page_bytes}}) == nullptr);
    REQUIRE(store.insert({3, virt_addr{0x5000}}, page_mapping(0x5000, 7), page_of(0x77)).has_value());
    REQUIRE(store.read({3, virt_addr{0x5000}}, 0, b).has_value());
    CHECK(std::to_integer<int>(b[0]) == 0x77);
}

TEST_CASE("an allocation failure inside insert leaves the heap store exactly as it was") {
    // Inserts that need a new chunk, a new space and B-tree node splits, each
    // failing at every allocation in turn until it goes through.
    hosted::heap_shadow_store store{200};
    std::map<shadow_key, std::uint8_t> kept;
    std::uint64_t failures = 0;
    for (std::uint64_t i = 0; i < 150; ++i) {
        const shadow_key k{static_cast<std::uint32_t>(i % 3 == 0 ? i / 3 : 0), virt_addr{((i * 37) % 150) * page_bytes}};
        CAPTURE(i);
        for (long fail_at = 0;; ++fail_at) {
            bool threw = false;
            allocations_left = fail_at;
            try {
                const auto r = store.insert(k, page_mapping(k.page.value(), i), page_of(static_cast<std::uint8_t>(i)));
                allocations_left = -1;
                REQUIRE(r.has_value());
            } catch (const std::bad_alloc&) {
                allocations_left = -1;
                threw = true;
                ++failures;
            }
            if (!threw) break;
            REQUIRE(store.size() == kept.size());
            CHECK(store.original(k) == nullptr);
        }
        kept[k] = static_cast<std::uint8_t>(i);
    }
    CHECK(failures > 150);  // every insert met at least one failure before it went through
    std::array<std::byte, 1> b{};
    for (const auto& [k, v] : kept) {
        REQUIRE(store.read(k, 17, b).has_value());
        CHECK(std::to_integer<std::uint8_t>(b[0]) == v);
    }
    for (const auto& [k, v] : kept) REQUIRE(store.erase(k).has_value());
    CHECK(store.size() == 0);
}

TEST_CASE("the heap store's heap use stays within 1 % of its page copies") {
    const auto seed = test::test_seed();
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    constexpr std::size_t pages = 3000;
    std::vector<shadow_key> keys;
    for (std::uint64_t i = 0; i < pages; ++i) keys.push_back({static_cast<std::uint32_t>(i % 2), virt_addr{i * page_bytes}});
    std::shuffle(keys.begin(), keys.end(), rng);  // B-tree nodes fill less than in order
    const auto content = page_of(0x5a);
    const auto before = ::mallinfo2().uordblks;
    auto store = std::make_unique<hosted::heap_shadow_store>(pages);
    for (const shadow_key& k : keys) REQUIRE(store->insert(k, page_mapping(k.page.value(), 0), content).has_value());
    const auto after = ::mallinfo2().uordblks;
    if (after <= before) {
        WARN("mallinfo2 does not see this allocator (a sanitizer's): not measured");
        return;
    }
    const double per_page = static_cast<double>(after - before + sizeof(hosted::heap_shadow_store)) / pages - page_bytes;
    INFO(per_page << " B per page beyond the copy");
    CHECK(per_page >= hosted::heap_shadow_store::bookkeeping_bytes_per_page);
    CHECK(per_page <= 0.01 * page_bytes);
}
