// The lab's output: one CSV row per guest x window x policy combination, a
// summary per window x guest kind x policy, the cost table used, the shadow
// accesses over time, and gnuplot PNGs drawn from them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "lab/costs.hpp"
#include "lab/guest_workload.hpp"
#include "lab/replay.hpp"

namespace asreloc::lab {

// Every time the stub was mapped somewhere: the first placement, conflict
// moves and hops. (Whether statistics counts the placement among the free or
// victim relocations changed while the manager was written; this holds for both.)
template <class Stats>
std::uint64_t moves_of(const Stats& s) noexcept {
    if constexpr (requires { s.victim_placements; })
        return s.placements + s.free_relocations + s.victim_relocations;
    else
        return s.free_relocations + s.victim_relocations;
}

// Moves that displaced guest content, the first placement included.
template <class Stats>
std::uint64_t victim_moves_of(const Stats& s) noexcept {
    if constexpr (requires { s.victim_placements; })
        return s.victim_placements + s.victim_relocations;
    else
        return s.victim_relocations;
}

inline std::string window_name(std::uint64_t w) {
    if (w == 0) return "native";
    if (w % (std::uint64_t{1} << 30) == 0) return std::to_string(w >> 30) + "G";
    if (w % (std::uint64_t{1} << 20) == 0) return std::to_string(w >> 20) + "M";
    return std::to_string(w >> 10) + "K";
}

// One row of results.csv.
struct result_row {
    std::string guest;
    guest_kind kind = guest_kind::layout;
    std::uint64_t window = 0;
    policy_combo policy;
    replay_result r;
    double overhead_us = 0;

    std::uint64_t shadow() const noexcept { return r.stats.shadow_reads + r.stats.shadow_writes; }
    double per_million_us() const noexcept {
        return r.accesses == 0 ? 0.0 : overhead_us * 1e6 / static_cast<double>(r.accesses);
    }
    double per_million(std::uint64_t n) const noexcept {
        return r.accesses == 0 ? 0.0 : static_cast<double>(n) * 1e6 / static_cast<double>(r.accesses);
    }
};

class report {
public:
    report(std::string out, const cost_table& costs, std::uint64_t stub_kib)
        : out_(std::move(out)), costs_(costs), stub_kib_(stub_kib) {}

    void add(const guest_workload& w, std::uint64_t window, const policy_combo& p, replay_result r) {
        result_row row{w.name, w.kind, window, p, std::move(r)};
        const statistics& s = row.r.stats;
        cost_inputs in{.conflicts = s.conflicts,
                       .moves = moves_of(s),
                       .stub_pages = stub_kib_ / 4,
                       .pages_copied = s.pages_displaced + s.pages_restored,
                       .shadow_accesses = s.shadow_reads + s.shadow_writes,
                       .sampled_pages = row.r.sampled_pages};
        row.overhead_us = modeled_ns(costs_, in) / 1000.0;
        rows_.push_back(std::move(row));
    }

    const std::vector<result_row>& rows() const noexcept { return rows_; }

    static constexpr const char* csv_header =
        "guest,kind,window,finder,victims,tracker,stub_kib,guest_accesses,mapping_calls,ticks,placed,"
        "first_placement,conflicts,moves,free_relocations,victim_relocations,hops,pages_displaced,pages_restored,"
        "bytes_copied,shadow_accesses,reflected,conflicts_per_M,shadow_per_M,hops_per_M,hops_to_settle,settled,"
        "failures,fixups_consistent,overhead_us,overhead_us_per_M";

    bool write() const {
        std::ofstream csv(out_ + "/results.csv");
        csv << csv_header << "\n";
        for (const auto& row : rows_) {
            const statistics& s = row.r.stats;
            csv << row.guest << ',' << to_string(row.kind) << ',' << window_name(row.window) << ','
                << to_string(row.policy.finder) << ',' << to_string(row.policy.victims) << ','
                << to_string(row.policy.tracker) << ',' << stub_kib_ << ',' << row.r.accesses << ','
                << row.r.mapping_calls << ',' << row.r.ticks << ',' << (row.r.placed ? "yes" : "no") << ','
                << (!row.r.placed ? "none" : row.r.first_placement_victim ? "victim" : "free") << ',' << s.conflicts
                << ',' << moves_of(s) << ',' << s.free_relocations << ',' << s.victim_relocations << ',' << s.hops << ','
                << s.pages_displaced << ',' << s.pages_restored << ',' << s.bytes_copied << ',' << row.shadow()
                << ',' << s.reflected << ',' << fixed(row.per_million(s.conflicts)) << ','
                << fixed(row.per_million(row.shadow())) << ',' << fixed(row.per_million(s.hops)) << ','
                << row.r.hops_to_settle << ',' << (row.r.settled ? "yes" : "no") << ',' << row.r.failures << ','
                << (row.r.fixups_consistent ? "yes" : "no") << ',' << fixed(row.overhead_us) << ','
                << (row.r.accesses == 0 ? std::string("") : fixed(row.per_million_us())) << "\n";
        }
        std::ofstream costs(out_ + "/costs.csv");
        costs << "entry,ns,source\n";
        for (const auto& [name, e] : costs_.entries()) costs << name << ',' << fixed(e->ns) << ",\"" << e->source << "\"\n";
        write_summary();
        write_summary_markdown();
        write_shadow_series();
        return bool(csv) && bool(costs);
    }

    void print_summary(std::ostream& o) const {
        // The best combination per window and guest kind (least total modeled overhead; ties: fewer hops).
        // Fewer refused calls first (a refused call is work not done), then less overhead.
        std::map<std::pair<std::string, std::string>, std::tuple<std::uint64_t, double, std::string, int>> best;
        for (const auto& [key, agg] : summary()) {
            const auto& [window, kind, policy] = key;
            auto& [failures, us, name, ties] = best[{window, kind}];
            if (name.empty() || std::pair{agg.failures, agg.overhead_us} < std::pair{failures, us}) {
                failures = agg.failures;
                us = agg.overhead_us;
                name = policy;
                ties = 1;
            } else if (agg.failures == failures && agg.overhead_us == us) {
                ++ties;
            }
        }
        o << "least modeled overhead per window and guest kind (summary.csv has every combination):\n";
        for (const auto& [k, v] : best) {
            const auto& [failures, us, name, ties] = v;
            o << "  window " << k.first << ", " << k.second << ": " << name;
            if (ties > 1) o << " and " << ties - 1 << " more, tied";
            o << " (" << fixed(us) << " us in all)\n";
        }
    }

    // Writes the gnuplot data and script, and runs gnuplot when it is installed.
    void plot(std::ostream& o) const {
        const std::string script = write_plot_script();
        if (script.empty()) {
            o << "asreloc-lab: nothing to plot\n";
            return;
        }
        if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
            o << "asreloc-lab: gnuplot not found (Debian: apt-get install gnuplot-nox); plots skipped, script in "
              << script << "\n";
            return;
        }
        const std::string cmd = "cd '" + out_ + "' && gnuplot plots.gp";
        if (std::system(cmd.c_str()) != 0) {
            o << "asreloc-lab: gnuplot failed on " << script << "\n";
            return;
        }
        o << "asreloc-lab: plots in " << out_ << "/overhead.png, hops_to_settle.png, shadow_over_time.png\n";
    }

private:
    struct aggregate {
        std::uint64_t guests = 0, accesses = 0, conflicts = 0, free_relocations = 0, victim_relocations = 0, hops = 0,
                      bytes_copied = 0, shadow = 0, failures = 0, settled = 0, victim_moves = 0;
        double overhead_us = 0;
        std::vector<std::uint64_t> hops_to_settle;
    };
    using summary_key = std::tuple<std::string, std::string, std::string>;  // window, kind, policy

    static std::string fixed(double v) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.3f", v);
        return buf;
    }

    std::map<summary_key, aggregate> summary() const {
        std::map<summary_key, aggregate> out;
        for (const auto& row : rows_) {
            auto& a = out[{window_name(row.window), to_string(row.kind), row.policy.name()}];
            const statistics& s = row.r.stats;
            ++a.guests;
            a.accesses += row.r.accesses;
            a.conflicts += s.conflicts;
            a.free_relocations += s.free_relocations;
            a.victim_relocations += s.victim_relocations;
            a.victim_moves += victim_moves_of(s);
            a.hops += s.hops;
            a.bytes_copied += s.bytes_copied;
            a.shadow += row.shadow();
            a.failures += row.r.failures;
            a.settled += row.r.settled ? 1 : 0;
            a.overhead_us += row.overhead_us;
            a.hops_to_settle.push_back(row.r.hops_to_settle);
        }
        return out;
    }

    void write_summary() const {
        std::ofstream s(out_ + "/summary.csv");
        s << "window,kind,policy,guests,guest_accesses,conflicts,free_relocations,victim_relocations,hops,"
             "bytes_copied,shadow_accesses,median_hops_to_settle,guests_settled,failures,overhead_us,"
             "overhead_us_per_M\n";
        for (auto [key, a] : summary()) {
            const auto& [window, kind, policy] = key;
            std::sort(a.hops_to_settle.begin(), a.hops_to_settle.end());
            const std::uint64_t median = a.hops_to_settle.empty() ? 0 : a.hops_to_settle[a.hops_to_settle.size() / 2];
            s << window << ',' << kind << ',' << policy << ',' << a.guests << ',' << a.accesses << ',' << a.conflicts
              << ',' << a.free_relocations << ',' << a.victim_relocations << ',' << a.hops << ',' << a.bytes_copied
              << ',' << a.shadow << ',' << median << ',' << a.settled << ',' << a.failures << ','
              << fixed(a.overhead_us) << ','
              << (a.accesses == 0 ? std::string("") : fixed(a.overhead_us * 1e6 / static_cast<double>(a.accesses)))
              << "\n";
        }
    }

    // The table for a README: per window and guest kind, the combinations
    // with the least and the most modeled overhead (ties listed by count).
    void write_summary_markdown() const {
        struct pick {
            double best = 0, worst = 0;
            std::string best_name, worst_name;
            std::size_t best_ties = 0;
            aggregate best_agg;
            std::uint64_t guests = 0, accesses = 0;
        };
        std::map<std::pair<std::string, std::string>, pick> picks;
        std::vector<std::pair<std::string, std::string>> order;
        for (const auto& [key, a] : summary()) {
            const auto& [window, kind, policy] = key;
            auto [it, fresh] = picks.try_emplace({window, kind});
            pick& p = it->second;
            if (fresh) {
                order.push_back({window, kind});
                p = {a.overhead_us, a.overhead_us, policy, policy, 1, a, a.guests, a.accesses};
                continue;
            }
            // A combination whose calls the manager refused did less work, not
            // better work: fewer failures first, then less overhead.
            const auto better = std::pair{a.failures, a.overhead_us} < std::pair{p.best_agg.failures, p.best};
            if (better) {
                p.best = a.overhead_us;
                p.best_name = policy;
                p.best_ties = 1;
                p.best_agg = a;
            } else if (a.failures == p.best_agg.failures && a.overhead_us == p.best) {
                ++p.best_ties;
            }
            if (a.overhead_us > p.worst) {
                p.worst = a.overhead_us;
                p.worst_name = policy;
            }
        }
        // Windows in the order the run gave them, not alphabetically.
        std::map<std::string, std::size_t> rank;
        for (const auto& row : rows_) rank.try_emplace(window_name(row.window), rank.size());
        std::stable_sort(order.begin(), order.end(),
                         [&](const auto& a, const auto& b) { return rank[a.first] < rank[b.first]; });
        std::ofstream md(out_ + "/summary.md");
        md << "| window | guests | accesses | least overhead: combination | its overhead | conflicts | victim moves (placement included) | "
              "hops | shadow accesses | refused calls | most overhead: combination | its overhead |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        for (const auto& k : order) {
            const pick& p = picks[k];
            const auto us = [](double v) {
                char buf[64];
                if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f s", v / 1e6);
                else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.2f ms", v / 1e3);
                else std::snprintf(buf, sizeof buf, "%.1f us", v);
                return std::string(buf);
            };
            const std::string best =
                p.best_ties > 1 ? p.best_name + " (and " + std::to_string(p.best_ties - 1) + " tied)" : p.best_name;
            md << "| " << k.first << " | " << p.guests << " " << k.second << " | " << p.accesses << " | " << best << " | "
               << us(p.best) << " | " << p.best_agg.conflicts << " | " << p.best_agg.victim_moves << " | "
               << p.best_agg.hops << " | " << p.best_agg.shadow << " | " << p.best_agg.failures << " | "
               << (p.worst == p.best ? std::string("(all equal)") : p.worst_name) << " | " << us(p.worst) << " |\n";
        }
    }

    void write_shadow_series() const {
        std::ofstream s(out_ + "/shadow_over_time.csv");
        s << "guest,window,policy,tick,shadow_accesses_cumulative\n";
        for (const auto& row : rows_) {
            if (row.shadow() == 0) continue;
            std::uint64_t total = 0;
            for (std::size_t t = 0; t < row.r.shadow_per_tick.size(); ++t) {
                total += row.r.shadow_per_tick[t];
                s << row.guest << ',' << window_name(row.window) << ',' << row.policy.name() << ',' << t + 1 << ','
                  << total << "\n";
            }
        }
    }

    // The window whose results the per-guest plots show: the smallest one run
    // (where free ranges run out and policies differ most).
    std::uint64_t plot_window() const {
        std::uint64_t w = ~std::uint64_t{0};
        bool native = false;
        for (const auto& row : rows_) {
            if (row.window == 0) native = true;
            else w = std::min(w, row.window);
        }
        return w == ~std::uint64_t{0} && native ? 0 : w;
    }

    // A guests x policies table for a clustered histogram: the `limit` guests
    // with the largest row maximum, skipping guests where every value is 0.
    template <class Value>
    bool write_matrix(const std::string& file, std::uint64_t window, Value value, std::size_t limit) const {
        const auto combos = all_policy_combos();
        std::map<std::string, std::vector<double>> m;
        for (const auto& row : rows_) {
            if (row.window != window) continue;
            auto& v = m[row.guest];
            v.resize(combos.size(), 0.0);
            for (std::size_t i = 0; i < combos.size(); ++i)
                if (combos[i].name() == row.policy.name()) v[i] = value(row);
        }
        std::vector<std::pair<double, std::string>> order;
        for (const auto& [g, v] : m) {
            const double top = *std::max_element(v.begin(), v.end());
            if (top > 0) order.push_back({top, g});
        }
        if (order.empty()) return false;
        std::sort(order.rbegin(), order.rend());
        if (order.size() > limit) order.resize(limit);
        std::ofstream d(out_ + "/" + file);
        d << "guest";
        for (const auto& c : combos) d << ' ' << c.name();
        d << "\n";
        for (const auto& [top, g] : order) {
            (void)top;
            std::string label = g.substr(g.find('/') + 1);
            d << '"' << label << '"';
            for (double x : m[g]) d << ' ' << x;
            d << "\n";
        }
        return true;
    }

    std::string write_plot_script() const {
        const std::uint64_t w = plot_window();
        const bool overhead = write_matrix("overhead.dat", w, [](const result_row& r) { return r.overhead_us; }, 24);
        const bool hops = write_matrix("hops_to_settle.dat", w,
                                       [](const result_row& r) { return static_cast<double>(r.r.hops_to_settle); }, 24);
        // The guest with the most shadow accesses in that window: its series, one column per policy.
        const result_row* top = nullptr;
        for (const auto& row : rows_)
            if (row.window == w && (top == nullptr || row.shadow() > top->shadow())) top = &row;
        bool shadow = top != nullptr && top->shadow() > 0;
        if (shadow) {
            std::ofstream d(out_ + "/shadow_over_time.dat");
            const auto combos = all_policy_combos();
            std::vector<std::vector<std::uint64_t>> series(combos.size());
            std::size_t ticks = 0;
            for (const auto& row : rows_) {
                if (row.window != w || row.guest != top->guest) continue;
                for (std::size_t i = 0; i < combos.size(); ++i)
                    if (combos[i].name() == row.policy.name()) {
                        std::uint64_t total = 0;
                        for (auto x : row.r.shadow_per_tick) series[i].push_back(total += x);
                        ticks = std::max(ticks, row.r.shadow_per_tick.size());
                    }
            }
            d << "tick";
            for (const auto& c : combos) d << ' ' << c.name();
            d << "\n";
            for (std::size_t t = 0; t < ticks; ++t) {
                d << t + 1;
                for (const auto& s : series) d << ' ' << (t < s.size() ? s[t] : (s.empty() ? 0 : s.back()));
                d << "\n";
            }
        }
        if (!overhead && !hops && !shadow) return {};
        std::ofstream gp(out_ + "/plots.gp");
        const std::string wn = window_name(w);
        gp << "# Generated by asreloc-lab: run `gnuplot plots.gp` in this folder.\n"
              "set terminal pngcairo size 1600,700 font ',10' noenhanced\n"
              "set style data histograms\nset style histogram clustered gap 2\nset style fill solid 0.9 border -1\n"
              "set key outside right top vertical font ',9'\nset xtics rotate by -35 font ',9'\nset grid ytics\n"
              // Twelve combinations: four colours beyond gnuplot's default eight.
              "set linetype 9 lc rgb '#8c564b'\nset linetype 10 lc rgb '#e377c2'\n"
              "set linetype 11 lc rgb '#7f7f7f'\nset linetype 12 lc rgb '#bcbd22'\nset linetype cycle 12\n";
        if (overhead)
            gp << "set output 'overhead.png'\nset title 'Modeled monitor overhead per guest and policy (window " << wn
               << ", stub " << stub_kib_ << " KiB)'\nset ylabel 'overhead [us, log scale]'\nset logscale y\n"
                  "plot for [i=2:13] 'overhead.dat' using (column(i) > 0 ? column(i) : 1/0):xtic(1) title columnheader(i)\n"
                  "unset logscale y\n";
        if (hops)
            gp << "set output 'hops_to_settle.png'\nset title 'Hops until the placement settled (window " << wn
               << "; all hops when it never settled)'\nset ylabel 'hops'\n"
                  "plot for [i=2:13] 'hops_to_settle.dat' using i:xtic(1) title columnheader(i)\n";
        if (shadow)
            gp << "set output 'shadow_over_time.png'\nset style data lines\nset xtics norotate\n"
                  "set title 'Shadow-store accesses over time: "
               << top->guest << " (window " << wn
               << ")'\nset xlabel 'tick'\nset ylabel 'cumulative shadow accesses'\n"
                  "plot for [i=2:13] 'shadow_over_time.dat' using 1:i title columnheader(i) lw 2\n";
        return out_ + "/plots.gp";
    }

    std::string out_;
    cost_table costs_;
    std::uint64_t stub_kib_;
    std::vector<result_row> rows_;
};

}  // namespace asreloc::lab
