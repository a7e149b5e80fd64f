// Hotness sampling: asreloc's accessed-bit query_and_clear over a range
// beside a plain loop over the same entries (descend the tables, count the
// 4 KiB pages whose leaf has A set, clear A). Two states of the tables:
//   cold  - nothing accessed since the last harvest (the steady state of a
//           range the guest does not touch): query_and_clear(range, accessed);
//   hot   - every leaf accessed: a count without clearing (ad_bits::none),
//           so every iteration sees the same tables.
// The range is the hull of the guest's user mappings. Both subjects must count
// the same pages.
#include <algorithm>
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include "support/bench_context.hpp"

namespace asreloc::bench {
namespace {

constexpr std::uint64_t accessed_bit = std::uint64_t{1} << 5;

enum class harvest_mode { count, count_and_clear, set };

// Descends only into entries overlapping [lo, hi]; the range lies in the
// lower canonical half, so no sign extension is needed.
struct plain_loop {
    const offset_phys_map* memory;
    std::uint64_t root;
    unsigned top;
    std::uint64_t lo, hi;

    std::uint64_t operator()(harvest_mode m) const { return walk(root, top, 0, m); }

    std::uint64_t walk(std::uint64_t table_phys, unsigned level, std::uint64_t base, harvest_mode m) const {
        auto* t = reinterpret_cast<std::uint64_t*>(memory->to_virt(phys_addr{table_phys}));
        const unsigned shift = 12 + 9 * (level - 1);
        const std::uint64_t first_va = std::max(lo, base);
        const std::uint64_t last_va = std::min(hi, base + ((std::uint64_t{512} << shift) - 1));
        const auto first = static_cast<unsigned>((first_va - base) >> shift);
        const auto last = static_cast<unsigned>((last_va - base) >> shift);
        std::uint64_t pages = 0;
        for (unsigned i = first; i <= last; ++i) {
            const std::uint64_t e = t[i];
            if ((e & 1) == 0) continue;
            const std::uint64_t va = base + (std::uint64_t{i} << shift);
            if (level == 1 || (level <= 3 && (e & (std::uint64_t{1} << 7)) != 0)) {
                if (m == harvest_mode::set) {
                    t[i] = e | accessed_bit;
                    continue;
                }
                if ((e & accessed_bit) == 0) continue;
                const std::uint64_t a = std::max(va, lo), b = std::min(va + ((std::uint64_t{1} << shift) - 1), hi);
                pages += (b - a + 1) >> 12;
                if (m == harvest_mode::count_and_clear) t[i] = e & ~accessed_bit;
                continue;
            }
            pages += walk(e & 0x000f'ffff'ffff'f000, level - 1, va, m);
        }
        return pages;
    }
};

struct variant {
    const char* name;
    harvest_mode loop_mode;
    ad_bits clear;
};
constexpr variant variants[] = {{"cold", harvest_mode::count_and_clear, ad_bits::accessed},
                                {"hot", harvest_mode::count, ad_bits::none}};

}  // namespace

void register_hotness(bench_context& ctx) {
    for (auto& g : ctx.layouts) {
        const auto user = g.user_regions();
        if (user.empty()) continue;
        const std::uint64_t lo = user.front().start, hi = user.back().end - 1;
        const auto range = virt_range::from_bounds(virt_addr{lo}, virt_addr{hi});
        const plain_loop loop{&ctx.memory, g.table->root().value(), x86_64::levels(g.mode), lo, hi};
        space* s = g.table.get();
        for (const variant& v : variants) {
            const std::string case_name = "hotness/" + g.name + "/" + v.name;
            // Sets every A bit, checks that query_and_clear counts what the plain
            // loop counts and clears what it should, which leaves the tables in
            // the variant's state (cold: all clear; hot: all set); false and an
            // error otherwise.
            auto prepare = [loop, s, range, v](benchmark::State& st) {
                (void)loop(harvest_mode::set);
                const std::uint64_t mapped_pages = loop(harvest_mode::count);
                const auto sample = s->query_and_clear(range, v.clear);
                const std::uint64_t left = loop(harvest_mode::count);
                const std::uint64_t expected_left = v.clear == ad_bits::none ? mapped_pages : 0;
                if (!sample || sample->accessed_pages != mapped_pages || left != expected_left) {
                    st.SkipWithError("query_and_clear and the plain loop count or clear different pages");
                    return false;
                }
                st.counters["pages"] = static_cast<double>(mapped_pages);
                return true;
            };
            benchmark::RegisterBenchmark((case_name + "/asreloc").c_str(), [s, range, v, prepare](benchmark::State& st) {
                if (!prepare(st)) return;
                for (auto _ : st) {
                    auto sample = s->query_and_clear(range, v.clear);
                    benchmark::DoNotOptimize(sample);
                }
            })->Unit(benchmark::kNanosecond);
            benchmark::RegisterBenchmark((case_name + "/plain_loop").c_str(), [loop, v, prepare](benchmark::State& st) {
                if (!prepare(st)) return;
                for (auto _ : st) benchmark::DoNotOptimize(loop(v.loop_mode));
            })->Unit(benchmark::kNanosecond);
        }
    }
}

}  // namespace asreloc::bench
