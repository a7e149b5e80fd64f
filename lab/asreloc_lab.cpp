// asreloc-lab: replays the real address-space data of a data directory
// (../shared/data, or the bundled tests/data) through the relocation manager
// with every combination of policies, and writes a CSV per guest x policy,
// a summary, and gnuplot PNGs. See lab/README.md for the options and the model.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "lab/costs.hpp"
#include "lab/guest_workload.hpp"
#include "lab/measure_costs.hpp"
#include "lab/replay.hpp"
#include "lab/report.hpp"

namespace fs = std::filesystem;
using namespace asreloc::lab;

namespace {

#ifndef ASRELOC_LAB_DEFAULT_DATA
#define ASRELOC_LAB_DEFAULT_DATA "../shared/data"
#endif
#if defined(__OPTIMIZE__) && defined(NDEBUG)
constexpr const char* build_kind = "optimised, NDEBUG";
#elif defined(__OPTIMIZE__)
constexpr const char* build_kind = "optimised, assertions on";
#else
constexpr const char* build_kind = "unoptimised";
#endif

struct options {
    std::string data = ASRELOC_LAB_DEFAULT_DATA;
    std::string out = "lab-results";
    std::uint64_t stub_kib = 16;
    std::vector<std::uint64_t> windows{0};  // 0: the guest's own space
    std::uint32_t hop_period = 10;
    std::uint32_t settle = 1;
    std::uint64_t seed = 1;
    std::string costs = "measure";
    std::vector<std::string> only;
    std::vector<std::string> kinds;
    bool plots = true;
    bool progress = true;
};

void usage(std::ostream& o) {
    o << "usage: asreloc-lab [options]\n"
         "  --data DIR         data directory (default " ASRELOC_LAB_DEFAULT_DATA ")\n"
         "  --out DIR          where results go (default lab-results)\n"
         "  --stub-kib N       stub size in KiB, a multiple of 4 from 16 (IDT, GDT/TSS, entry code, data)\n"
         "                     up to 256 (default 16)\n"
         "  --window LIST      comma-separated search windows: native, or a size like 4G, 1G, 64M;\n"
         "                     a window smaller than the guest's space folds it (va mod size) (default native)\n"
         "  --hop-period N     ticks between hotness judgements; a tick is 100,000 accesses of an\n"
         "                     access trace or one call of an event trace; 0 never hops (default 10)\n"
         "  --settle N         cold periods before hopping counts as settled (default 1)\n"
         "  --seed N           seed of the victim selectors' generator (default 1)\n"
         "  --costs SPEC       measure (copy/remap/walk/harvest timed in this build), default, or a file of\n"
         "                     'name ns [source]' lines (default measure)\n"
         "  --only SUBSTR      replay only guests whose file name contains SUBSTR (repeatable)\n"
         "  --kind LIST        only these guest kinds: layout,events,access,guest-os\n"
         "  --no-plots         write no PNGs\n"
         "  --no-progress      no progress bar (it is shown only when stderr is a terminal)\n";
}

std::optional<std::uint64_t> parse_size(const std::string& s) {
    if (s == "native") return 0;
    if (s.empty()) return std::nullopt;
    std::uint64_t mult = 1;
    std::string digits = s;
    switch (s.back()) {
    case 'K': case 'k': mult = std::uint64_t{1} << 10; digits.pop_back(); break;
    case 'M': case 'm': mult = std::uint64_t{1} << 20; digits.pop_back(); break;
    case 'G': case 'g': mult = std::uint64_t{1} << 30; digits.pop_back(); break;
    case 'T': case 't': mult = std::uint64_t{1} << 40; digits.pop_back(); break;
    default: break;
    }
    const auto v = parse_decimal(digits);
    if (!v || *v == 0 || *v > (UINT64_MAX / mult)) return std::nullopt;
    const std::uint64_t bytes = *v * mult;
    if (bytes % asreloc::page_bytes != 0) return std::nullopt;
    return bytes;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ',')) out.push_back(item);
    return out;
}

bool parse_options(int argc, char** argv, options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](std::string& into) {
            if (i + 1 >= argc) {
                std::cerr << "asreloc-lab: " << a << " needs a value\n";
                return false;
            }
            into = argv[++i];
            return true;
        };
        auto number = [&](auto& into) {
            std::string v;
            if (!value(v)) return false;
            const auto n = parse_decimal(v);
            if (!n) {
                std::cerr << "asreloc-lab: " << a << ": bad number '" << v << "'\n";
                return false;
            }
            into = static_cast<std::remove_reference_t<decltype(into)>>(*n);
            return true;
        };
        std::string v;
        if (a == "--help" || a == "-h") {
            usage(std::cout);
            std::exit(0);
        } else if (a == "--data") {
            if (!value(o.data)) return false;
        } else if (a == "--out") {
            if (!value(o.out)) return false;
        } else if (a == "--stub-kib") {
            if (!number(o.stub_kib)) return false;
            if (o.stub_kib < 16 || o.stub_kib % 4 != 0 || o.stub_kib / 4 > max_stub_pages) {
                std::cerr << "asreloc-lab: --stub-kib must be a multiple of 4 from 16 to " << max_stub_pages * 4 << "\n";
                return false;
            }
        } else if (a == "--window") {
            if (!value(v)) return false;
            o.windows.clear();
            for (const auto& w : split_commas(v)) {
                const auto size = parse_size(w);
                if (!size) {
                    std::cerr << "asreloc-lab: --window: '" << w << "' is not native or a multiple of 4K like 4G or 512K\n";
                    return false;
                }
                o.windows.push_back(*size);
            }
        } else if (a == "--hop-period") {
            if (!number(o.hop_period)) return false;
        } else if (a == "--settle") {
            if (!number(o.settle)) return false;
        } else if (a == "--seed") {
            if (!number(o.seed)) return false;
        } else if (a == "--costs") {
            if (!value(o.costs)) return false;
        } else if (a == "--only") {
            if (!value(v)) return false;
            o.only.push_back(v);
        } else if (a == "--kind") {
            if (!value(v)) return false;
            o.kinds = split_commas(v);
        } else if (a == "--no-plots") {
            o.plots = false;
        } else if (a == "--no-progress") {
            o.progress = false;
        } else {
            std::cerr << "asreloc-lab: unknown option '" << a << "'\n";
            usage(std::cerr);
            return false;
        }
    }
    return true;
}

// One data file = one guest.
struct guest_file {
    std::string name;  // relative to the data directory
    std::string path;
    guest_kind kind;
    bool is_32bit = false;
};

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<guest_file> discover(const options& o) {
    struct folder {
        const char* dir;
        const char* suffix;
        guest_kind kind;
        bool is_32bit;
    };
    const folder folders[] = {
        {"layouts", ".maps", guest_kind::layout, false},          {"mapping-events", ".events", guest_kind::events, false},
        {"page-access", ".windows.gz", guest_kind::access, false}, {"layouts32", ".maps", guest_kind::layout, true},
        {"layouts32", ".maps.gz", guest_kind::layout, true},       {"layouts32", ".events", guest_kind::events, true},
        {"layouts32", ".events.gz", guest_kind::events, true},     {"guest-os", ".ranges.gz", guest_kind::guest_os, false},
    };
    std::vector<guest_file> out;
    for (const auto& f : folders) {
        const fs::path dir = fs::path(o.data) / f.dir;
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) continue;
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir, ec))
            if (e.is_regular_file() && ends_with(e.path().filename().string(), f.suffix))
                names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        for (const auto& n : names) {
            const std::string rel = std::string(f.dir) + "/" + n;
            if (!o.only.empty() &&
                std::none_of(o.only.begin(), o.only.end(), [&](const std::string& s) { return rel.find(s) != std::string::npos; }))
                continue;
            if (!o.kinds.empty() && std::find(o.kinds.begin(), o.kinds.end(), to_string(f.kind)) == o.kinds.end()) continue;
            out.push_back({rel, (dir / n).string(), f.kind, f.is_32bit});
        }
    }
    return out;
}

// Parses one file into a workload; prints every error (file:line) and gives
// nothing back when there was one, so a half-read guest never skews results.
std::optional<guest_workload> load(const guest_file& g) {
    std::vector<parse_error> errors;
    std::optional<guest_workload> w;
    switch (g.kind) {
    case guest_kind::layout: {
        auto l = read_maps_layout(g.path);
        errors = l.errors;
        if (l.ok()) w = workload_from_layout(l, g.name, g.is_32bit);
        break;
    }
    case guest_kind::events: {
        auto t = read_event_trace(g.path);
        errors = t.errors;
        if (t.ok()) w = workload_from_events(t, g.name, g.is_32bit);
        break;
    }
    case guest_kind::access: {
        auto t = read_access_trace(g.path);
        errors = t.errors;
        if (t.ok()) w = workload_from_accesses(t, g.name);
        break;
    }
    case guest_kind::guest_os: {
        auto d = read_guest_space(g.path);
        errors = d.errors;
        if (d.ok()) w = workload_from_guest_os(d, g.name);
        break;
    }
    }
    const std::size_t shown = std::min<std::size_t>(errors.size(), 20);
    for (std::size_t i = 0; i < shown; ++i) std::cerr << "asreloc-lab: " << errors[i].describe() << "\n";
    if (errors.size() > shown) std::cerr << "asreloc-lab: " << g.path << ": " << errors.size() - shown << " more errors\n";
    if (!errors.empty()) std::cerr << "asreloc-lab: " << g.path << ": skipped (malformed input)\n";
    return w;
}

class progress_bar {
public:
    progress_bar(std::uint64_t total, bool enabled) : total_(total), enabled_(enabled && isatty(2) == 1) {}
    void step(const std::string& what) {
        ++done_;
        if (!enabled_) return;
        const int width = 30;
        const int filled = total_ == 0 ? width : static_cast<int>(done_ * width / total_);
        std::string label = what.size() > 40 ? what.substr(what.size() - 40) : what;
        std::fprintf(stderr, "\r[%s%s] %llu/%llu %-40s", std::string(filled, '#').c_str(),
                     std::string(width - filled, '.').c_str(), static_cast<unsigned long long>(done_),
                     static_cast<unsigned long long>(total_), label.c_str());
        if (done_ == total_) std::fprintf(stderr, "\n");
        std::fflush(stderr);
    }

private:
    std::uint64_t total_;
    std::uint64_t done_ = 0;
    bool enabled_;
};

}  // namespace

int main(int argc, char** argv) {
    options o;
    if (!parse_options(argc, argv, o)) return 2;
    std::error_code ec;
    if (!fs::is_directory(o.data, ec)) {
        std::cerr << "asreloc-lab: data directory '" << o.data << "' does not exist (use --data)\n";
        return 2;
    }
    fs::create_directories(o.out, ec);
    if (ec) {
        std::cerr << "asreloc-lab: cannot create '" << o.out << "': " << ec.message() << "\n";
        return 2;
    }
    const auto files = discover(o);
    if (files.empty()) {
        std::cerr << "asreloc-lab: no guest files under '" << o.data << "'\n";
        return 2;
    }

    host_memory memory;
    const std::uint64_t stub_pages = o.stub_kib / 4;
    cost_table costs;
    bool input_errors = false;
    if (o.costs == "measure") {
        measure_costs(memory, stub_pages, costs, build_kind);
    } else if (o.costs != "default") {
        for (const auto& e : load_costs(o.costs, costs)) {
            std::cerr << "asreloc-lab: " << e.describe() << "\n";
            input_errors = true;
        }
    }

    const auto combos = all_policy_combos();
    report rep(o.out, costs, o.stub_kib);
    progress_bar bar(files.size() * o.windows.size() * combos.size(), o.progress);
    std::uint64_t guests = 0;
    for (const auto& f : files) {
        auto w = load(f);
        if (!w) {
            input_errors = true;
            for (std::size_t i = 0; i < o.windows.size() * combos.size(); ++i) bar.step(f.name + " (skipped)");
            continue;
        }
        ++guests;
        for (std::uint64_t window : o.windows) {
            replay_config c{.stub_pages = stub_pages, .window = window, .hop_period = o.hop_period,
                            .settle_periods = o.settle, .seed = o.seed};
            std::size_t failing = 0;
            std::string example;
            for (const auto& p : combos) {
                replay_result r = replay(memory, *w, c, p);
                if (r.failures > 0 && failing++ == 0)
                    example = p.name() + ": " + std::to_string(r.failures) + " failed calls, first " +
                              r.failure_samples.front();
                rep.add(*w, window, p, r);
                bar.step(f.name);
            }
            // Refusals are results (e.g. no victim when the guest wants the whole window), not input errors.
            if (failing > 0)
                std::cerr << "asreloc-lab: " << f.name << " (window " << window_name(window) << "): the manager refused "
                          << "calls in " << failing << " of " << combos.size() << " combinations (column failures), e.g. "
                          << example << "\n";
        }
    }
    if (!rep.write()) return 2;
    std::cout << "asreloc-lab: " << guests << " guests x " << o.windows.size() << " windows x " << combos.size()
              << " policy combinations -> " << o.out << "/results.csv, summary.csv, costs.csv\n";
    rep.print_summary(std::cout);
    if (o.plots) rep.plot(std::cout);
    return input_errors ? 3 : 0;
}
