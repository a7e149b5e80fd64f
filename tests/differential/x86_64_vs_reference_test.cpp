// The x86-64 backend against the reference model: the same random operations
// on both, every result compared (value or exact error), and after every batch
// the translations of random probes and the complete walks of mappings and
// gaps over the whole 64-bit space, in both orders.
#include <catch2/catch.hpp>

#include <random>
#include <sstream>
#include <vector>

#include "asreloc/reference/page_table.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "support/seed.hpp"
#include "support/sim_memory.hpp"

using namespace asreloc;

namespace {

constexpr std::size_t frames = 16384;
using memory = test::sim_memory<frames>;
using x86_space = x86_64::page_table<frame_pool<frames>, memory>;

// Operations land in a few 4 GiB clusters so that large pages, splits and
// merges meet each other; one cluster sits in the upper half, one (5-level
// only) above the 48-bit boundary.
struct generator {
    std::mt19937_64 rng;
    bool five_level;

    std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>{0, n - 1}(rng); }

    std::uint64_t cluster_base() {
        const std::uint64_t bases[] = {0x0000'0000'0000'0000, 0x0000'7f80'0000'0000, 0xffff'8000'0000'0000,
                                       0xffff'ffff'0000'0000, 0x0001'0000'0000'0000, 0xff00'0000'0000'0000};
        return bases[below(five_level ? 6 : 4)];
    }
    page_size any_size() {
        const auto r = below(10);
        return r < 6 ? page_size::size_4k : r < 9 ? page_size::size_2m : page_size::size_1g;
    }
    attributes any_attributes() {
        const auto b = rng();
        return attributes{.writable = (b & 1) != 0,
                          .user = (b & 2) != 0,
                          .executable = (b & 4) != 0,
                          .global = (b & 8) != 0,
                          .memory_type = static_cast<std::uint8_t>((b >> 4) & 7),
                          .protection_key = static_cast<std::uint8_t>((b >> 8) & 15)};
    }
    // A range of `size` pages inside a cluster, sometimes misaligned on purpose.
    virt_range any_range(page_size size, std::uint64_t max_pages) {
        const auto unit = bytes(size);
        auto start = cluster_base() + below((std::uint64_t{4} << 30) / unit) * unit;
        if (below(50) == 0) start += page_bytes;
        return virt_range::of(virt_addr{start}, unit * (1 + below(max_pages)));
    }
    // 4 KiB granular range, often cutting large pages.
    virt_range any_small_range() {
        auto r = any_range(below(3) == 0 ? page_size::size_2m : page_size::size_4k, 4);
        const auto shift = below(600) * page_bytes;
        return virt_range::of(r.start() + shift, r.size() + below(700) * page_bytes);
    }
};

template <class T>
std::string describe(const result<T>& r) {
    std::ostringstream s;
    if (!r) s << "error " << to_string(r.error_code());
    else s << "ok";
    return s.str();
}

std::vector<mapping> all_mappings(const auto& space, walk_order order) {
    std::vector<mapping> out;
    const auto r = space.for_each_mapping(virt_range::everything(), order, [&](const mapping& m) {
        out.push_back(m);
        return walk_control::proceed;
    });
    REQUIRE(r.has_value());
    return out;
}
std::vector<virt_range> all_gaps(const auto& space, walk_order order) {
    std::vector<virt_range> out;
    const auto r = space.for_each_gap(virt_range::everything(), order, [&](const virt_range& g) {
        out.push_back(g);
        return walk_control::proceed;
    });
    REQUIRE(r.has_value());
    return out;
}

void compare_walks(const x86_space& x86, const reference::page_table& model) {
    for (const auto order : {walk_order::bottom_up, walk_order::top_down}) {
        REQUIRE(all_mappings(x86, order) == all_mappings(model, order));
        REQUIRE(all_gaps(x86, order) == all_gaps(model, order));
    }
}

// Splits of 1 GiB pages add leaves faster than small unmaps take them away;
// past this many leaves, half of them (chosen at random) are unmapped leaf by
// leaf on both sides, so the walks after each batch stay cheap.
constexpr std::size_t leaf_cap = 4'000;

void thin_out(x86_space& x86, reference::page_table& model, generator& gen) {
    const auto leaves = all_mappings(x86, walk_order::bottom_up);
    if (leaves.size() <= leaf_cap) return;
    for (const auto& leaf : leaves) {
        if (gen.below(2) == 0) continue;
        const auto a = x86.unmap(leaf.range());
        const auto b = model.unmap(leaf.range());
        INFO("thinning: unmap " << std::hex << leaf.start.value() << "+" << leaf.range().size());
        REQUIRE(describe(a) == describe(b));
        if (a) REQUIRE(*a == *b);
    }
}

void run(std::uint64_t seed, bool five_level, int operations) {
    memory mem;
    auto made = x86_space::create(mem.frames(), mem, five_level ? x86_64::paging_mode::five_level
                                                                : x86_64::paging_mode::four_level);
    REQUIRE(made.has_value());
    auto& x86 = *made;
    reference::page_table model{five_level ? 57u : 48u};
    generator gen{std::mt19937_64{seed}, five_level};
    std::uint64_t next_frame = 0x1'0000'0000;

    for (int op = 0; op < operations; ++op) {
        INFO("operation " << op);
        const auto kind = gen.below(100);
        if (kind < 35) {
            const auto size = gen.any_size();
            const auto range = gen.any_range(size, size == page_size::size_4k ? 64 : 2);
            const auto unit = bytes(size);
            next_frame = (next_frame + unit - 1) / unit * unit;
            const phys_addr phys{gen.below(40) == 0 ? next_frame + page_bytes : next_frame};
            next_frame += range.size();
            const auto attrs = gen.below(200) == 0 ? attributes{.memory_type = 9} : gen.any_attributes();
            const auto a = x86.map(range, phys, attrs, size);
            const auto b = model.map(range, phys, attrs, size);
            INFO("map " << std::hex << range.start().value() << "+" << range.size());
            REQUIRE(describe(a) == describe(b));
            if (a) REQUIRE(*a == *b);
        } else if (kind < 60) {
            const auto range = gen.any_small_range();
            const auto a = x86.unmap(range);
            const auto b = model.unmap(range);
            INFO("unmap " << std::hex << range.start().value() << "+" << range.size());
            REQUIRE(describe(a) == describe(b));
            if (a) REQUIRE(*a == *b);
        } else if (kind < 80) {
            const auto range = gen.any_small_range();
            const auto attrs = gen.any_attributes();
            const auto a = x86.protect(range, attrs);
            const auto b = model.protect(range, attrs);
            INFO("protect " << std::hex << range.start().value() << "+" << range.size());
            REQUIRE(describe(a) == describe(b));
            if (a) REQUIRE(*a == *b);
        } else if (kind < 87) {
            const auto range = gen.any_range(page_size::size_2m, 600);
            const auto a = x86.coalesce(range);
            const auto b = model.coalesce(range);
            REQUIRE(describe(a) == describe(b));
            if (a) REQUIRE(*a == *b);
        } else if (kind < 95) {
            const auto va = virt_addr{gen.any_small_range().start().value() + gen.below(page_bytes)};
            const bool write = gen.below(2) == 0;
            REQUIRE(describe(x86.mark_accessed(va, write)) == describe(model.mark_accessed(va, write)));
        } else {
            const auto range = gen.any_small_range();
            const auto bits = static_cast<ad_bits>(gen.below(4));
            const auto a = x86.query_and_clear(range, bits);
            const auto b = model.query_and_clear(range, bits);
            REQUIRE(describe(a) == describe(b));
            if (a) {
                REQUIRE(a->accessed_pages == b->accessed_pages);
                REQUIRE(a->dirty_pages == b->dirty_pages);
                REQUIRE(a->invalidate == b->invalidate);
            }
        }
        if (op % 250 == 249) {
            for (int probe = 0; probe < 64; ++probe) {
                const auto va = virt_addr{gen.any_small_range().start().value() + gen.below(page_bytes)};
                const auto a = x86.translate(va);
                const auto b = model.translate(va);
                REQUIRE(describe(a) == describe(b));
                if (a) REQUIRE(*a == *b);
            }
        }
        if (op % 1000 == 999) {
            compare_walks(x86, model);
            thin_out(x86, model, gen);
        }
    }
    compare_walks(x86, model);
}

}  // namespace

// 4 x 30,000 operations: four test cases so that ctest can run them side by side.
TEST_CASE("the x86-64 backend and the reference model agree on 30,000 operations with 4-level paging (first half)") {
    const auto seed = test::test_seed();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    run(seed, false, 30'000);
}

TEST_CASE("the x86-64 backend and the reference model agree on 30,000 operations with 4-level paging (second half)") {
    const auto seed = test::test_seed() + 1;
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    run(seed, false, 30'000);
}

TEST_CASE("the x86-64 backend and the reference model agree on 30,000 operations with 5-level paging (first half)") {
    const auto seed = test::test_seed() + 2;
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    run(seed, true, 30'000);
}

TEST_CASE("the x86-64 backend and the reference model agree on 30,000 operations with 5-level paging (second half)") {
    const auto seed = test::test_seed() + 3;
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << ")");
    run(seed, true, 30'000);
}
