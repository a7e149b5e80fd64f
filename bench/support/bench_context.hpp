// What every suite of the benchmark program shares: the data directory, the
// layouts built into x86-64 tables, and the physical memory behind them. Each
// suite registers its benchmarks from it (one register_* function per file).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "sim/host_memory.hpp"
#include "layouts.hpp"

namespace asreloc::bench {

struct bench_context {
    std::filesystem::path data;
    lab::host_memory frames{std::size_t{1} << 19};  // 2 GiB of table frames reserved, touched as used
    offset_phys_map memory = frames.map();
    std::vector<guest_layout> layouts;
};

// Names are "<suite>/<case>/<subject>": the ratio reporter pairs subjects of
// the same case (see ratio_reporter.hpp).
void register_find_free(bench_context& ctx);
void register_translate(bench_context& ctx);
void register_hotness(bench_context& ctx);
void register_relocation(bench_context& ctx);
void register_memory(bench_context& ctx);

inline std::string size_label(std::uint64_t bytes) {
    if (bytes % (std::uint64_t{1} << 20) == 0) return std::to_string(bytes >> 20) + "M";
    return std::to_string(bytes >> 10) + "K";
}

}  // namespace asreloc::bench
