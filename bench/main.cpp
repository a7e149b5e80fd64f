// The benchmark program: loads the layouts of a data directory, builds them
// into x86-64 tables, registers every suite and runs them with the ratio
// reporter. Usage:
//   asreloc_bench [google-benchmark flags] [DATA_DIR] [--all-snapshots]
// DATA_DIR defaults to the directory chosen at configure time (../shared/data
// beside the source tree, else the bundled tests/data). Without
// --all-snapshots one snapshot per program or guest boot is used.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "support/bench_context.hpp"
#include "support/ratio_reporter.hpp"

#ifndef ASRELOC_BENCH_DATA_DIR
#error "the build defines ASRELOC_BENCH_DATA_DIR"
#endif

namespace asreloc::bench {
namespace {

std::string layout_table(const bench_context& ctx) {
    std::string out = "## Layouts (data: " + ctx.data.string() +
                      ")\n\n| layout | kind | paging | regions | mapped | table pages | search window |\n"
                      "|---|---|---|---|---|---|---|\n";
    for (const auto& g : ctx.layouts) {
        char line[512];
        std::snprintf(line, sizeof line, "| %s | %s | %u-level | %zu | %.1f MiB | %zu | %s-%s |\n", g.name.c_str(),
                      kind_name(g.kind), x86_64::levels(g.mode), g.regions.size(),
                      static_cast<double>(g.mapped_bytes) / (1 << 20), g.table_frames,
                      lab::to_hex(g.window.start().value()).c_str(), lab::to_hex(g.window.last().value()).c_str());
        out += line;
    }
    return out;
}

}  // namespace
}  // namespace asreloc::bench

int main(int argc, char** argv) {
    using namespace asreloc::bench;
    benchmark::Initialize(&argc, argv);
    static bench_context ctx;  // static: the tables outlive every benchmark
    ctx.data = ASRELOC_BENCH_DATA_DIR;
    load_options options;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--all-snapshots") == 0) options.all_snapshots = true;
        else if (argv[i][0] == '-') {
            std::fprintf(stderr, "asreloc_bench: unknown option %s\n", argv[i]);
            return 2;
        } else ctx.data = argv[i];
    }

    std::vector<std::string> errors;
    ctx.layouts = load_layouts(ctx.data, options, errors);
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    if (ctx.layouts.empty()) {
        std::fprintf(stderr, "asreloc_bench: no layout found under %s (layouts/, layouts32/, guest-os/)\n",
                     ctx.data.c_str());
        return 2;
    }
    for (auto& g : ctx.layouts) {
        if (auto failed = build_tables(g, ctx.frames, ctx.memory)) {
            std::fprintf(stderr, "asreloc_bench: %s: %s\n", g.name.c_str(), failed->c_str());
            return 2;
        }
    }

    register_find_free(ctx);
    register_translate(ctx);
    register_hotness(ctx);
    register_relocation(ctx);
    register_memory(ctx);

    ratio_reporter reporter(stdout, layout_table(ctx));
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    if (!reporter.errors().empty()) {
        std::fprintf(stderr, "asreloc_bench: %zu benchmark(s) reported an error\n", reporter.errors().size());
        return 1;
    }
    return errors.empty() ? 0 : 1;
}
