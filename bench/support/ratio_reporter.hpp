// The benchmark program's own reporter: shows the usual console output, keeps
// the median real time of every benchmark (the "median" aggregate when run
// with repetitions, else the median of the runs seen), and at the end prints
// the ratio tables: asreloc beside each baseline of the same case, with the
// issue's goals marked as holding or not. Names are "<suite>/<case>/<subject>".
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace asreloc::bench {

class ratio_reporter : public benchmark::ConsoleReporter {
public:
    // Colour only on a terminal: a display reporter given to the library
    // does not see --benchmark_color.
    ratio_reporter(std::FILE* tables, std::string preamble)
        : ConsoleReporter(::isatty(::fileno(tables)) ? OO_ColorTabular : OO_Tabular), tables_(tables),
          preamble_(std::move(preamble)) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run& r : runs) {
            const std::string name = subject_name(r.run_name.str());
            if (r.error_occurred) {
                errors_[name] = r.error_message;
                continue;
            }
            if (r.run_type == Run::RT_Aggregate) {
                if (r.aggregate_name == "median") {
                    median_[name] = r.GetAdjustedRealTime();
                    counters_[name] = r.counters;
                }
                continue;
            }
            samples_[name].push_back(r.GetAdjustedRealTime());
            if (!counters_.count(name)) counters_[name] = r.counters;
        }
    }

    void Finalize() override {
        ConsoleReporter::Finalize();
        print_tables();
    }

    // Every benchmark that reported an error (a subject disagreeing with
    // asreloc, a failed setup): the program exits non-zero when there is one.
    const std::map<std::string, std::string>& errors() const { return errors_; }

private:
    using counter_map = benchmark::UserCounters;

    // Median time in ns, or a negative value when the benchmark did not run.
    double median(const std::string& name) const {
        if (auto it = median_.find(name); it != median_.end()) return it->second;
        auto it = samples_.find(name);
        if (it == samples_.end() || it->second.empty()) return -1;
        auto v = it->second;
        std::sort(v.begin(), v.end());
        return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    }
    double counter(const std::string& name, const std::string& key) const {
        auto it = counters_.find(name);
        if (it == counters_.end()) return -1;
        auto c = it->second.find(key);
        return c == it->second.end() ? -1 : static_cast<double>(c->second);
    }
    std::set<std::string> names_with_prefix(const std::string& prefix) const {
        std::set<std::string> out;
        for (const auto& [n, v] : samples_)
            if (n.rfind(prefix, 0) == 0) out.insert(n);
        for (const auto& [n, v] : median_)
            if (n.rfind(prefix, 0) == 0) out.insert(n);
        return out;
    }
    // The registered name: without the "/manual_time", "/iterations:1" and
    // similar components the library appends.
    static std::string subject_name(std::string name) {
        for (std::size_t at; (at = name.rfind('/')) != std::string::npos;) {
            const std::string last = name.substr(at + 1);
            if (last != "manual_time" && last != "real_time" && last.find(':') == std::string::npos) break;
            name.resize(at);
        }
        return name;
    }
    static std::string case_of(const std::string& name) { return name.substr(0, name.rfind('/')); }
    static std::string fmt(double ns) {
        char b[32];
        if (ns < 0) return "-";
        if (ns >= 1e6) std::snprintf(b, sizeof b, "%.2f ms", ns / 1e6);
        else if (ns >= 1e4) std::snprintf(b, sizeof b, "%.1f us", ns / 1e3);
        else std::snprintf(b, sizeof b, "%.0f ns", ns);
        return b;
    }
    static std::string ratio(double num, double den) {
        if (num < 0 || den <= 0) return "-";
        char b[32];
        std::snprintf(b, sizeof b, "%.2f", num / den);
        return b;
    }

    void print_find() const {
        const auto names = names_with_prefix("find/");
        if (names.empty()) return;
        std::set<std::string> cases;
        for (const auto& n : names)
            if (n.find("/empty-process/") == std::string::npos) cases.insert(case_of(n));
        std::fprintf(tables_,
                     "\n### Free-range search (goal: asreloc >= 10x faster than linear and than mmap)\n\n"
                     "Speed-up = baseline time / asreloc time (above 1: asreloc is faster), for asreloc's finders over "
                     "an indexed_page_table (index); walk = the same finders over the tables' own gap walks. mmap is "
                     "Linux's own top-down search, one per layout and size, with its syscall floor (empty process) "
                     "beside it.\n\n"
                     "| layout/size | policy | asreloc index | asreloc walk | linear | btree | mmap (floor) | x linear | "
                     "x btree | x mmap | goal |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        int held = 0, missed = 0;
        for (const auto& c : cases) {
            const std::string size = c.substr(c.rfind('/') + 1);
            const double mmap = median(c + "/linux.mmap");
            const double floor = median("find/empty-process/" + size + "/linux.mmap");
            for (const char* p : {"bottom_up", "top_down", "best_fit"}) {
                const std::string base = c + "/" + p;
                const double a = median(base + ".asreloc_index"), w = median(base + ".asreloc_walk");
                const double lin = median(base + ".linear"), bt = median(base + ".btree");
                if (a < 0) continue;
                const bool ok = lin > 0 && mmap > 0 && lin / a >= 10 && mmap / a >= 10;
                (ok ? held : missed)++;
                std::fprintf(tables_, "| %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n",
                             c.substr(5).c_str(), p, fmt(a).c_str(), fmt(w).c_str(), fmt(lin).c_str(),
                             fmt(bt).c_str(), fmt(mmap).c_str(), fmt(floor).c_str(), ratio(lin, a).c_str(),
                             ratio(bt, a).c_str(), ratio(mmap, a).c_str(), ok ? "holds" : "no");
            }
        }
        std::fprintf(tables_, "\nFree-range goal (>= 10x vs linear and mmap): holds in %d of %d rows.\n", held,
                     held + missed);
    }

    // Generic pairs: asreloc vs one baseline subject in the same case; the
    // ratio is asreloc / baseline (cost), the goal an upper bound on it.
    // Names with numbers in numeric order: 4K before 16K before 64K.
    struct natural_less {
        bool operator()(const std::string& a, const std::string& b) const {
            std::size_t i = 0, j = 0;
            while (i < a.size() && j < b.size()) {
                if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
                    std::size_t ei = i, ej = j;
                    while (ei < a.size() && std::isdigit(static_cast<unsigned char>(a[ei]))) ++ei;
                    while (ej < b.size() && std::isdigit(static_cast<unsigned char>(b[ej]))) ++ej;
                    const auto na = std::stoull(a.substr(i, ei - i)), nb = std::stoull(b.substr(j, ej - j));
                    if (na != nb) return na < nb;
                    i = ei;
                    j = ej;
                } else {
                    if (a[i] != b[j]) return a[i] < b[j];
                    ++i;
                    ++j;
                }
            }
            return a.size() - i < b.size() - j;
        }
    };

    void print_pairs(const char* title, const std::string& suite, const std::string& baseline, double goal) const {
        const auto names = names_with_prefix(suite + "/");
        std::set<std::string, natural_less> cases;
        for (const auto& n : names) cases.insert(case_of(n));
        if (cases.empty()) return;
        std::fprintf(tables_, "\n### %s\n\n| case | asreloc | %s | asreloc / %s | goal |\n|---|---|---|---|---|\n",
                     title, baseline.c_str(), baseline.c_str());
        int held = 0, rows = 0;
        for (const auto& c : cases) {
            const double a = median(c + "/asreloc"), b = median(c + "/" + baseline);
            if (a < 0 || b < 0) continue;
            const bool ok = a / b <= goal;
            ++rows;
            held += ok ? 1 : 0;
            std::fprintf(tables_, "| %s | %s | %s | %s | %s |\n", c.substr(suite.size() + 1).c_str(), fmt(a).c_str(),
                         fmt(b).c_str(), ratio(a, b).c_str(), goal > 0 ? (ok ? "holds" : "no") : "(none set)");
        }
        if (goal > 0) std::fprintf(tables_, "\n%s goal (<= %.1fx): holds in %d of %d rows.\n", title, goal, held, rows);
    }

    void print_counters(const char* title, const std::string& suite) const {
        const auto names = names_with_prefix(suite + "/");
        if (names.empty()) return;
        std::fprintf(tables_, "\n### %s\n\n| what | counters |\n|---|---|\n", title);
        for (const auto& n : names) {
            auto it = counters_.find(n);
            if (it == counters_.end()) continue;
            std::string line;
            for (const auto& [k, v] : it->second) {
                char b[96];
                std::snprintf(b, sizeof b, "%s%s = %.4g", line.empty() ? "" : ", ", k.c_str(), static_cast<double>(v));
                line += b;
            }
            std::fprintf(tables_, "| %s | %s |\n", n.substr(suite.size() + 1).c_str(), line.c_str());
        }
    }

    void print_tables() const {
        std::fprintf(tables_, "\n%s\n## Ratios (medians of repetitions)\n", preamble_.c_str());
        print_find();
        print_pairs("Index upkeep (no goal set: map + unmap of one 4 KiB page through indexed_page_table / through "
                    "the table alone)",
                    "index-upkeep", "plain_table", 0);
        print_pairs("Translate (goal: asreloc within 1.5x of the hand-written walk)", "translate", "four_load_walk",
                    1.5);
        print_pairs("Relocation, free path (goal: within 3x of the bare stores)", "relocate-free", "bare_stores", 3.0);
        print_pairs("Relocation, free path against the checked floor (no goal: a walk per space, the target checked "
                    "free and the source mapped, then the bare stores)",
                    "relocate-free", "checked_stores", 0);
        print_pairs("Relocation, free path against the backend alone (no goal: the manager / one move_4k_pages per "
                    "space, then the slot stores)",
                    "relocate-free", "backend_moves", 0);
        print_pairs("Relocation, free path, the stub carrying the x86-64 tables (goal: within 3x of the bare stores; "
                    "256 gates, the TSS descriptor, GDTR/IDTR and two stacks rewritten instead of eight slots)",
                    "relocate-free-x86", "bare_stores", 3.0);
        print_pairs("Relocation, free path to a range with no page tables yet (no goal: a move 4 GiB away / a move "
                    "within one page table)",
                    "relocate-free-far", "near_move", 0);
        print_pairs("Relocation, free path over indexed spaces (no goal: the manager over indexed_page_table / over "
                    "the bare tables)",
                    "relocate-free-indexed", "bare_tables", 0);
        print_pairs("Relocation, victim path (goal: within 1.5x of memcpy + free path)", "relocate-victim",
                    "memcpy_plus_free", 1.5);
        print_pairs("Relocation, victim path against its floor (no goal: memcpy + the bare stores)", "relocate-victim",
                    "memcpy_plus_bare_stores", 0);
        print_pairs("Hotness sampling (no goal set: asreloc / plain loop)", "hotness", "plain_loop", 0);
        print_counters("Memory (computed from sizeof/capacity and measured heap use)", "memory");
        if (!errors_.empty()) {
            std::fprintf(tables_, "\n### Errors\n\n");
            for (const auto& [n, m] : errors_) std::fprintf(tables_, "- %s: %s\n", n.c_str(), m.c_str());
        }
        std::fflush(tables_);
    }

    std::FILE* tables_;
    std::string preamble_;
    std::map<std::string, std::vector<double>> samples_;
    std::map<std::string, double> median_;
    std::map<std::string, counter_map> counters_;
    std::map<std::string, std::string> errors_;
};

}  // namespace asreloc::bench
