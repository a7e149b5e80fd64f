// Free-range search: asreloc's region finders over real x86-64 tables built
// from real layouts, beside the baselines a user has today, in the same run:
//   linear  - the tables scanned entry by entry for a run of free entries, as
//             VirtualBox raw mode scanned the guest page directory for a hole;
//   btree   - a gap scan over an absl::btree_map of the guest's intervals;
//   mmap    - the Linux kernel's own gap search: the layout is reproduced in a
//             forked child (MAP_FIXED_NOREPLACE) and mmap(NULL) + munmap timed
//             there, syscall included; "empty-process" gives the syscall floor.
// asreloc is timed twice: its finders over the tables' own gap walks
// ("asreloc_walk"), and over the same tables with their free space indexed
// (indexed_page_table, "asreloc_index", the index built before timing).
// All subjects must return the same address (checked before timing).
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <absl/container/btree_map.h>
#include <benchmark/benchmark.h>

#include "asreloc/paging/indexed_page_table.hpp"
#include "asreloc/policy/best_fit_finder.hpp"
#include "asreloc/policy/common_gaps.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "support/bench_context.hpp"

namespace asreloc::bench {
namespace {

enum class policy { bottom_up, top_down, best_fit };
constexpr std::array policies{policy::bottom_up, policy::top_down, policy::best_fit};
constexpr std::array<std::uint64_t, 3> stub_sizes{std::uint64_t{4} << 10, std::uint64_t{64} << 10,
                                                  std::uint64_t{2} << 20};

const char* policy_name(policy p) {
    switch (p) {
    case policy::bottom_up: return "bottom_up";
    case policy::top_down: return "top_down";
    case policy::best_fit: return "best_fit";
    }
    return "?";
}

// Where the stub would go, or nothing when no range fits.
using answer = std::optional<std::uint64_t>;

region_request request_for(const guest_layout& g, std::uint64_t size) {
    return region_request{.size = size, .alignment = page_bytes, .guard = 0, .window = g.window};
}

// ---- the subject ----

template <class P>
answer find_in(const P& table, policy p, const region_request& req) {
    const P* one[] = {&table};
    const std::span<const P* const> spaces{one};
    auto found = [&] {
        switch (p) {
        case policy::bottom_up: return bottom_up_finder{}.find_free(spaces, req);
        case policy::top_down: return top_down_finder{}.find_free(spaces, req);
        case policy::best_fit: break;
        }
        return best_fit_finder{}.find_free(spaces, req);
    }();
    if (!found) return std::nullopt;
    return found->start().value();
}

answer find_with_asreloc(const guest_layout& g, policy p, const region_request& req) {
    return find_in(*g.table, p, req);
}

// The layout's table with its free space indexed, in as many nodes as it needs.
struct indexed_layout {
    std::vector<gap_index::node> storage;
    std::optional<indexed_page_table<space>> table;

    explicit indexed_layout(const guest_layout& g) {
        auto needed = indexed_page_table<space>::nodes_for(*g.table);
        if (!needed) return;
        storage.resize(*needed);
        if (auto made = indexed_page_table<space>::over(*g.table, storage)) table.emplace(std::move(*made));
    }
};

// ---- baseline (a): entry-by-entry scan of the same tables ----

// Visits every entry of every table that overlaps the window, in address
// order, counting a run of free (not-present) entries; a not-present entry of
// a higher level counts as free for its whole span. First-fit policies stop as
// soon as the run holds the request, best-fit scans to the end.
class linear_scan {
public:
    linear_scan(const guest_layout& g, const offset_phys_map& memory, policy p, const region_request& req)
        : memory_(memory), root_(g.table->root().value()), top_(x86_64::levels(g.mode)),
          width_(x86_64::width(g.mode)), policy_(p), req_(req), window_(req.window) {}

    answer run() {
        found_.reset();
        in_run_ = false;
        (void)walk(root_, top_, 0);
        close_run();
        return found_;
    }

private:
    static constexpr std::uint64_t present = 1, page_size_bit = std::uint64_t{1} << 7;
    static constexpr std::uint64_t address_bits = 0x000f'ffff'ffff'f000;

    const std::uint64_t* table_at(std::uint64_t phys) const {
        return reinterpret_cast<const std::uint64_t*>(memory_.to_virt(phys_addr{phys}));
    }
    bool up() const { return policy_ != policy::top_down; }

    bool walk(std::uint64_t table_phys, unsigned level, std::uint64_t base) {
        const std::uint64_t* t = table_at(table_phys);
        const unsigned shift = 12 + 9 * (level - 1);
        unsigned first = 0, last = 511;
        if (level != top_) {
            const std::uint64_t lo = std::max(base, window_.start().value());
            const std::uint64_t hi = std::min(base + ((std::uint64_t{512} << shift) - 1), window_.last().value());
            first = static_cast<unsigned>((lo - base) >> shift);
            last = static_cast<unsigned>((hi - base) >> shift);
        }
        if (up()) {
            for (unsigned i = first; i <= last; ++i)
                if (visit(t[i], level, shift, base, i)) return true;
        } else {
            for (unsigned i = last + 1; i-- > first;)
                if (visit(t[i], level, shift, base, i)) return true;
        }
        return false;
    }

    bool visit(std::uint64_t e, unsigned level, unsigned shift, std::uint64_t base, unsigned i) {
        std::uint64_t va = base + (std::uint64_t{i} << shift);
        if (level == top_) va = x86_64::sign_extend(va, width_);
        const std::uint64_t va_last = va + ((std::uint64_t{1} << shift) - 1);
        if (va_last < window_.start().value() || va > window_.last().value()) return false;
        if ((e & present) == 0)
            return free_run(std::max(va, window_.start().value()), std::min(va_last, window_.last().value()));
        if (level == 1 || ((level == 2 || level == 3) && (e & page_size_bit) != 0)) {
            close_run();
            return false;
        }
        return walk(e & address_bits, level - 1, va);
    }

    bool free_run(std::uint64_t lo, std::uint64_t hi) {
        if (in_run_ && (up() ? lo == run_hi_ + 1 : hi + 1 == run_lo_)) {
            if (up()) run_hi_ = hi;
            else run_lo_ = lo;
        } else {
            close_run();
            in_run_ = true;
            run_lo_ = lo;
            run_hi_ = hi;
        }
        if (policy_ == policy::best_fit) return false;
        virt_addr at;
        const auto run = virt_range::from_bounds(virt_addr{run_lo_}, virt_addr{run_hi_});
        const bool fits = up() ? policy_detail::fit_lowest(run, req_, at) : policy_detail::fit_highest(run, req_, at);
        if (fits) found_ = at.value();
        return fits;
    }

    void close_run() {
        if (in_run_ && policy_ == policy::best_fit) {
            virt_addr at;
            const std::uint64_t s = run_hi_ - run_lo_;
            const auto run = virt_range::from_bounds(virt_addr{run_lo_}, virt_addr{run_hi_});
            if ((!found_ || s < best_size_minus1_) && policy_detail::fit_lowest(run, req_, at)) {
                found_ = at.value();
                best_size_minus1_ = s;
            }
        }
        in_run_ = false;
    }

    const offset_phys_map& memory_;
    std::uint64_t root_;
    unsigned top_;
    unsigned width_;
    policy policy_;
    region_request req_;
    virt_range window_;
    bool in_run_ = false;
    std::uint64_t run_lo_ = 0, run_hi_ = 0, best_size_minus1_ = 0;
    answer found_;
};

// ---- baseline (c): gap scan over an ordered map of intervals ----

class interval_map {
public:
    explicit interval_map(const guest_layout& g) {
        for (const auto& r : g.regions) last_of_.emplace(r.start, r.end - 1);
        // The non-canonical hole is not free: it cannot hold the stub.
        const unsigned w = x86_64::width(g.mode);
        last_of_.emplace(std::uint64_t{1} << (w - 1), ~std::uint64_t{0} - (std::uint64_t{1} << (w - 1)));
    }

    answer find(policy p, const region_request& req) const {
        return p == policy::top_down ? find_top_down(req) : find_ascending(p, req);
    }

private:
    answer find_ascending(policy p, const region_request& req) const {
        const std::uint64_t wlo = req.window.start().value(), whi = req.window.last().value();
        std::uint64_t cursor = wlo;  // lowest address not yet known to be mapped
        answer best;
        std::uint64_t best_s = 0;
        // Returns true when the search is over.
        auto gap = [&](std::uint64_t lo, std::uint64_t hi) {
            virt_addr at;
            const auto g = virt_range::from_bounds(virt_addr{lo}, virt_addr{hi});
            if (p == policy::bottom_up) {
                if (!policy_detail::fit_lowest(g, req, at)) return false;
                best = at.value();
                return true;
            }
            if ((!best || hi - lo < best_s) && policy_detail::fit_lowest(g, req, at)) {
                best = at.value();
                best_s = hi - lo;
            }
            return false;
        };
        auto it = last_of_.upper_bound(wlo);
        if (it != last_of_.begin()) {
            const auto prev = std::prev(it);
            if (prev->second >= cursor) {
                if (prev->second >= whi) return std::nullopt;
                cursor = prev->second + 1;
            }
        }
        for (; it != last_of_.end() && it->first <= whi; ++it) {
            if (it->first > cursor && gap(cursor, it->first - 1)) return best;
            if (it->second >= whi) return best;
            cursor = std::max(cursor, it->second + 1);
        }
        if (cursor <= whi) (void)gap(cursor, whi);
        return best;
    }

    answer find_top_down(const region_request& req) const {
        const std::uint64_t wlo = req.window.start().value(), whi = req.window.last().value();
        std::uint64_t cursor = whi;  // highest address not yet known to be mapped
        auto fits = [&](std::uint64_t lo, std::uint64_t hi, virt_addr& at) {
            return policy_detail::fit_highest(virt_range::from_bounds(virt_addr{lo}, virt_addr{hi}), req, at);
        };
        auto it = last_of_.upper_bound(whi);  // first interval starting above the window
        while (it != last_of_.begin()) {
            --it;
            const std::uint64_t first = it->first, last = it->second;
            if (last < cursor) {
                const std::uint64_t lo = std::max(last + 1, wlo);
                virt_addr at;
                if (lo <= cursor && fits(lo, cursor, at)) return at.value();
            }
            if (first <= wlo) return std::nullopt;
            cursor = std::min(cursor, first - 1);
            if (last < wlo) return std::nullopt;
        }
        virt_addr at;
        if (fits(wlo, cursor, at)) return at.value();
        return std::nullopt;
    }

    absl::btree_map<std::uint64_t, std::uint64_t> last_of_;  // start -> last byte
};

// ---- baseline (b): the Linux kernel's gap search, through mmap ----

bool write_all(int fd, const void* p, std::size_t n) {
    const auto* b = static_cast<const char*>(p);
    while (n > 0) {
        const ssize_t k = ::write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        b += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}
bool read_all(int fd, void* p, std::size_t n) {
    auto* b = static_cast<char*>(p);
    while (n > 0) {
        const ssize_t k = ::read(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        b += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

int prot_of(const attributes& a) {
    return PROT_READ | (a.writable ? PROT_WRITE : 0) | (a.executable ? PROT_EXEC : 0);
}

// A forked child holding a reproduction of the guest's user half, which times
// mmap(NULL, size) + munmap on request and reports back through a pipe.
class mmap_child {
public:
    static std::unique_ptr<mmap_child> spawn(const std::vector<layout_region>& regions) {
        int down[2], up[2];
        if (::pipe(down) != 0) return nullptr;
        if (::pipe(up) != 0) {
            ::close(down[0]);
            ::close(down[1]);
            return nullptr;
        }
        const pid_t pid = ::fork();
        if (pid < 0) return nullptr;
        if (pid == 0) {
            ::close(down[1]);
            ::close(up[0]);
            serve(down[0], up[1], regions);
        }
        ::close(down[0]);
        ::close(up[1]);
        auto child = std::unique_ptr<mmap_child>(new mmap_child(pid, down[1], up[0]));
        std::uint64_t counts[2];
        if (!read_all(child->from_, counts, sizeof counts)) return nullptr;
        child->placed = counts[0];
        child->refused = counts[1];
        return child;
    }
    mmap_child(const mmap_child&) = delete;
    mmap_child& operator=(const mmap_child&) = delete;
    ~mmap_child() {
        const std::uint64_t stop[2] = {0, 0};
        (void)write_all(to_, stop, sizeof stop);
        ::close(to_);
        ::close(from_);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }

    // Seconds for n rounds of mmap(NULL, size) + munmap; false if any failed.
    bool time(std::uint64_t n, std::uint64_t size, double& seconds) {
        const std::uint64_t ask[2] = {n, size};
        std::uint64_t reply[2];
        if (!write_all(to_, ask, sizeof ask) || !read_all(from_, reply, sizeof reply)) return false;
        seconds = static_cast<double>(reply[0]) * 1e-9;
        return reply[1] == 0;
    }

    std::uint64_t placed = 0;   // regions reproduced at their address
    std::uint64_t refused = 0;  // regions the child's own mappings (or mmap_min_addr) held

private:
    mmap_child(pid_t pid, int to, int from) : pid_(pid), to_(to), from_(from) {}

    [[noreturn]] static void serve(int in, int out, const std::vector<layout_region>& regions) {
        std::uint64_t counts[2] = {0, 0};
        for (const auto& r : regions) {
            void* want = reinterpret_cast<void*>(r.start);
            void* got = ::mmap(want, r.end - r.start, prot_of(r.attrs),
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
            if (got == want) ++counts[0];
            else {
                if (got != MAP_FAILED) ::munmap(got, r.end - r.start);  // a kernel without the flag
                ++counts[1];
            }
        }
        if (!write_all(out, counts, sizeof counts)) ::_exit(1);
        for (;;) {
            std::uint64_t ask[2];
            if (!read_all(in, ask, sizeof ask)) ::_exit(1);
            if (ask[0] == 0) ::_exit(0);
            std::uint64_t failed = 0;
            timespec a{}, b{};
            ::clock_gettime(CLOCK_MONOTONIC, &a);
            for (std::uint64_t i = 0; i < ask[0]; ++i) {
                void* p = ::mmap(nullptr, ask[1], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED) ++failed;
                else ::munmap(p, ask[1]);
            }
            ::clock_gettime(CLOCK_MONOTONIC, &b);
            const auto ns = static_cast<std::uint64_t>((b.tv_sec - a.tv_sec) * 1'000'000'000LL + (b.tv_nsec - a.tv_nsec));
            const std::uint64_t reply[2] = {ns, failed};
            if (!write_all(out, reply, sizeof reply)) ::_exit(1);
        }
    }

    pid_t pid_;
    int to_;
    int from_;
};

std::string describe(const answer& a) { return a ? "0x" + lab::to_hex(*a) : "none"; }

// Times `find` after checking that it agrees with asreloc's answer.
template <class Find>
void run_checked(benchmark::State& st, const guest_layout& g, policy p, const region_request& req, Find&& find) {
    const answer expected = find_with_asreloc(g, p, req);
    const answer got = find();
    if (got != expected) {
        st.SkipWithError(("answer " + describe(got) + " differs from asreloc's " + describe(expected)).c_str());
        return;
    }
    for (auto _ : st) {
        auto a = find();
        benchmark::DoNotOptimize(a);
    }
    st.counters["found"] = expected ? 1 : 0;
}

void register_linux(const std::string& case_name, std::vector<layout_region> regions, std::uint64_t size) {
    benchmark::RegisterBenchmark((case_name + "/linux.mmap").c_str(),
                                 [regions = std::move(regions), size](benchmark::State& st) {
                                     auto child = mmap_child::spawn(regions);
                                     if (!child) {
                                         st.SkipWithError("cannot start the mmap child");
                                         return;
                                     }
                                     constexpr std::uint64_t batch = 64;
                                     while (st.KeepRunningBatch(batch)) {
                                         double s = 0;
                                         if (!child->time(batch, size, s)) {
                                             st.SkipWithError("mmap failed in the child");
                                             break;
                                         }
                                         st.SetIterationTime(s);
                                     }
                                     st.counters["placed"] = static_cast<double>(child->placed);
                                     st.counters["refused"] = static_cast<double>(child->refused);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kNanosecond);
}

// What the index costs the guest's own changes: one 4 KiB page mapped at the
// lowest free address of the layout and unmapped again, through the table
// alone and through the indexed table (which also updates the index).
template <class Table>
bool map_and_unmap(benchmark::State& st, Table& table, const virt_range& page) {
    auto m = table.map(page, phys_addr{0}, read_write, page_size::size_4k);
    if (!m) {
        st.SkipWithError(("map failed: " + std::string(to_string(m.error_code()))).c_str());
        return false;
    }
    m->ignore();
    auto u = table.unmap(page);
    if (!u) {
        st.SkipWithError(("unmap failed: " + std::string(to_string(u.error_code()))).c_str());
        return false;
    }
    u->ignore();
    return true;
}

void register_upkeep(const guest_layout& g) {
    const answer at = find_with_asreloc(g, policy::bottom_up, request_for(g, page_bytes));
    if (!at) return;
    const auto page = virt_range::of(virt_addr{*at}, page_bytes);
    const std::string c = "index-upkeep/" + g.name;
    const guest_layout* gp = &g;
    benchmark::RegisterBenchmark((c + "/plain_table").c_str(), [gp, page](benchmark::State& st) {
        for (auto _ : st)
            if (!map_and_unmap(st, *gp->table, page)) break;
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [gp, page](benchmark::State& st) {
        indexed_layout ix(*gp);
        if (!ix.table) {
            st.SkipWithError("cannot index the layout's table");
            return;
        }
        const std::size_t ranges = ix.table->index().size();
        for (auto _ : st)
            if (!map_and_unmap(st, *ix.table, page)) break;
        if (ix.table->index().size() != ranges) st.SkipWithError("the index did not come back to its ranges");
        st.counters["free_ranges"] = static_cast<double>(ranges);
    })->Unit(benchmark::kNanosecond);
}

}  // namespace

void register_find_free(bench_context& ctx) {
    for (const std::uint64_t size : stub_sizes)
        register_linux("find/empty-process/" + size_label(size), {}, size);
    for (const auto& g : ctx.layouts) {
        for (const std::uint64_t size : stub_sizes) {
            const std::string case_name = "find/" + g.name + "/" + size_label(size);
            const region_request req = request_for(g, size);
            for (const policy p : policies) {
                const std::string prefix = case_name + "/" + policy_name(p);
                const guest_layout* gp = &g;
                const offset_phys_map* memory = &ctx.memory;
                benchmark::RegisterBenchmark((prefix + ".asreloc_walk").c_str(), [gp, p, req](benchmark::State& st) {
                    run_checked(st, *gp, p, req, [&] { return find_with_asreloc(*gp, p, req); });
                    st.counters["tables"] = static_cast<double>(gp->table_frames);
                })->Unit(benchmark::kNanosecond);
                benchmark::RegisterBenchmark((prefix + ".asreloc_index").c_str(), [gp, p, req](benchmark::State& st) {
                    const indexed_layout ix(*gp);
                    if (!ix.table) {
                        st.SkipWithError("cannot index the layout's table");
                        return;
                    }
                    run_checked(st, *gp, p, req, [&] { return find_in(*ix.table, p, req); });
                    st.counters["free_ranges"] = static_cast<double>(ix.table->index().size());
                    st.counters["index_bytes"] = static_cast<double>(ix.storage.size() * sizeof(gap_index::node));
                })->Unit(benchmark::kNanosecond);
                benchmark::RegisterBenchmark((prefix + ".linear").c_str(),
                                             [gp, p, req, memory](benchmark::State& st) {
                                                 linear_scan scan(*gp, *memory, p, req);
                                                 run_checked(st, *gp, p, req, [&] { return scan.run(); });
                                             })
                    ->Unit(benchmark::kNanosecond);
                benchmark::RegisterBenchmark((prefix + ".btree").c_str(), [gp, p, req](benchmark::State& st) {
                    const interval_map intervals(*gp);
                    run_checked(st, *gp, p, req, [&] { return intervals.find(p, req); });
                })->Unit(benchmark::kNanosecond);
            }
            register_linux(case_name, g.user_regions(), size);
        }
        register_upkeep(g);
    }
}

}  // namespace asreloc::bench
