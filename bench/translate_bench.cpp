// Translate: asreloc's x86-64 page_table::translate beside a hand-written walk
// of the same tables (one load per level, the floor any walker pays), over
// addresses drawn from the guest's own mappings. Both must agree on every address.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "support/bench_context.hpp"

namespace asreloc::bench {
namespace {

constexpr std::size_t sample_count = 4096;

// Addresses inside mapped pages, every mapped byte equally likely; fixed seed
// so both subjects (and every run) see the same sequence.
std::vector<std::uint64_t> sample_addresses(const guest_layout& g) {
    std::mt19937_64 random(0x5eed'0001);
    std::vector<std::uint64_t> cumulative;
    std::uint64_t total = 0;
    for (const auto& r : g.regions) cumulative.push_back(total += r.end - r.start);
    std::vector<std::uint64_t> out;
    out.reserve(sample_count);
    for (std::size_t i = 0; i < sample_count; ++i) {
        const std::uint64_t at = std::uniform_int_distribution<std::uint64_t>(0, total - 1)(random);
        const auto k = static_cast<std::size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), at) -
                                                cumulative.begin());
        const std::uint64_t before = k == 0 ? 0 : cumulative[k - 1];
        out.push_back(g.regions[k].start + (at - before));
    }
    return out;
}

// The floor: load the entry of each level, stop at a leaf (PS in a PDE or
// PDPTE), add the page offset. No rights, no attributes, no canonical check.
struct four_load_walk {
    const offset_phys_map* memory;
    std::uint64_t root;
    unsigned top;

    std::uint64_t operator()(std::uint64_t va) const {
        const auto* table = reinterpret_cast<const std::uint64_t*>(memory->to_virt(phys_addr{root}));
        for (unsigned level = top;; --level) {
            const unsigned shift = 12 + 9 * (level - 1);
            const std::uint64_t e = table[(va >> shift) & 511];
            if ((e & 1) == 0) return ~std::uint64_t{0};
            if (level == 1 || (level <= 3 && (e & (std::uint64_t{1} << 7)) != 0)) {
                const std::uint64_t offset_mask = (std::uint64_t{1} << shift) - 1;
                return (e & 0x000f'ffff'ffff'f000 & ~offset_mask) | (va & offset_mask);
            }
            table = reinterpret_cast<const std::uint64_t*>(memory->to_virt(phys_addr{e & 0x000f'ffff'ffff'f000}));
        }
    }
};

std::uint64_t with_asreloc(const space& s, std::uint64_t va) {
    const auto t = s.translate(virt_addr{va});
    return t ? t->phys.value() : ~std::uint64_t{0};
}

}  // namespace

void register_translate(bench_context& ctx) {
    for (const auto& g : ctx.layouts) {
        const std::string case_name = "translate/" + g.name;
        auto addresses = std::make_shared<const std::vector<std::uint64_t>>(sample_addresses(g));
        const four_load_walk walk{&ctx.memory, g.table->root().value(), x86_64::levels(g.mode)};
        const space* s = g.table.get();
        // Both subjects must map every sampled address to the same frame.
        auto agree = [addresses, walk, s](benchmark::State& st) {
            for (const std::uint64_t va : *addresses) {
                if (walk(va) != with_asreloc(*s, va) || walk(va) == ~std::uint64_t{0}) {
                    st.SkipWithError(("translations differ at 0x" + lab::to_hex(va)).c_str());
                    return false;
                }
            }
            return true;
        };
        benchmark::RegisterBenchmark((case_name + "/asreloc").c_str(), [addresses, s, agree](benchmark::State& st) {
            if (!agree(st)) return;
            std::size_t i = 0;
            for (auto _ : st) {
                benchmark::DoNotOptimize(with_asreloc(*s, (*addresses)[i]));
                i = (i + 1) % sample_count;
            }
        })->Unit(benchmark::kNanosecond);
        benchmark::RegisterBenchmark((case_name + "/four_load_walk").c_str(),
                                     [addresses, walk, agree](benchmark::State& st) {
                                         if (!agree(st)) return;
                                         std::size_t i = 0;
                                         for (auto _ : st) {
                                             benchmark::DoNotOptimize(walk((*addresses)[i]));
                                             i = (i + 1) % sample_count;
                                         }
                                     })
            ->Unit(benchmark::kNanosecond);
    }
}

}  // namespace asreloc::bench
