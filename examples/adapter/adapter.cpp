// How an existing hypervisor plugs its own page tables into asreloc: a
// "legacy" two-level 32-bit page table with the C-style API such a hypervisor
// already has, an adapter that makes it an asreloc::page_table, and a program
// that checks the adapter against the reference backend and then runs a
// region finder and the relocation manager on it. Exit status 1 on a mismatch.
#include <array>
#include <bitset>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/manager/relocation_manager.hpp"
#include "asreloc/paging/frame_pool.hpp"
#include "asreloc/paging/phys_map.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/policy/pool_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/reference/page_table.hpp"

// ============================================================================
// What the hypervisor already has (not asreloc code)
// ============================================================================
namespace legacy {

// 32-bit non-PAE entries (SDM vol. 3A, 4.3, Table 4-6), plus one software bit
// this hypervisor uses to remember pages it will not let the guest execute.
using pte_t = std::uint32_t;
constexpr pte_t pte_present = 1u << 0, pte_write = 1u << 1, pte_user = 1u << 2, pte_pwt = 1u << 3,
                pte_pcd = 1u << 4, pte_accessed = 1u << 5, pte_dirty = 1u << 6, pte_pat = 1u << 7,
                pte_global = 1u << 8, pte_noexec = 1u << 9, pte_frame = 0xffff'f000u;

// A directory of 1024 tables of 1024 entries, tables allocated on demand.
struct vm_pagedir {
    std::array<std::unique_ptr<std::array<pte_t, 1024>>, 1024> table;
    std::array<std::uint16_t, 1024> live{};  // present entries per table
    std::size_t tables = 0, max_tables = 1024;
};

// 0 on success, -1 when no memory is left for a table.
inline int pd_alloc_table(vm_pagedir& pd, unsigned pdi) {
    if (pd.table[pdi]) return 0;
    if (pd.tables == pd.max_tables) return -1;
    pd.table[pdi].reset(new (std::nothrow) std::array<pte_t, 1024>{});
    if (!pd.table[pdi]) return -1;
    ++pd.tables;
    return 0;
}
inline void pd_free_table_if_empty(vm_pagedir& pd, unsigned pdi) {
    if (pd.table[pdi] && pd.live[pdi] == 0) {
        pd.table[pdi].reset();
        --pd.tables;
    }
}
inline pte_t pd_get(const vm_pagedir& pd, std::uint32_t va) {
    const auto& t = pd.table[va >> 22];
    return t ? (*t)[(va >> 12) & 1023] : 0;
}
// The table must exist (pd_alloc_table).
inline void pd_set(vm_pagedir& pd, std::uint32_t va, pte_t pte) {
    pte_t& e = (*pd.table[va >> 22])[(va >> 12) & 1023];
    pd.live[va >> 22] = static_cast<std::uint16_t>(pd.live[va >> 22] - (e & pte_present) + (pte & pte_present));
    e = pte;
}

}  // namespace legacy

// ============================================================================
// The adapter: the legacy table as an asreloc::page_table
// ============================================================================
namespace {

using namespace asreloc;

// Only the low 4 GiB exist (is_canonical says so), only 4 KiB pages, no
// protection keys. Walks skip absent tables, so they cost what the populated
// part of the window costs. Every change validates and takes its tables
// before it writes an entry: an error leaves the directory as it was.
class legacy_space {
public:
    explicit legacy_space(legacy::vm_pagedir& pd) noexcept : pd_(&pd) {}

    bool is_canonical(virt_addr va) const noexcept { return va.value() <= top; }

    result<translation> translate(virt_addr va) const {
        if (!is_canonical(va)) return failure(error::non_canonical);
        const auto page = static_cast<std::uint32_t>(va.align_down(page_size::size_4k).value());
        const legacy::pte_t e = legacy::pd_get(*pd_, page);
        if ((e & legacy::pte_present) == 0) return failure(error::not_mapped);
        const mapping m = to_mapping(page, e);
        return translation{m.phys + va.page_offset(page_size::size_4k), m};
    }

    result<flush> map(virt_range r, phys_addr phys, attributes a, page_size s) {
        if (s != page_size::size_4k) return failure(error::unsupported_page_size);
        if (!r.is_aligned(s) || !phys.is_aligned(s)) return failure(error::misaligned);
        if (!in_space(r)) return failure(error::non_canonical);
        if (a.protection_key != 0 || a.memory_type > 7) return failure(error::invalid_attributes);
        if (phys.value() + (r.size() - 1) > top) return failure(error::out_of_bounds);
        if (any_present(r)) return failure(error::overlaps);
        std::bitset<1024> created;
        for (unsigned pdi = first_pdi(r); pdi <= last_pdi(r); ++pdi) {
            if (pd_->table[pdi]) continue;
            if (legacy::pd_alloc_table(*pd_, pdi) != 0) {
                for (unsigned c = 0; c < 1024; ++c)
                    if (created[c]) legacy::pd_free_table_if_empty(*pd_, c);
                return failure(error::out_of_frames);
            }
            created[pdi] = true;
        }
        for (std::uint64_t off = 0; off < r.size(); off += page_bytes)
            legacy::pd_set(*pd_, va32(r.start() + off), to_pte(phys + off, a));
        return flush::none();  // only not-present entries became present
    }

    result<flush> unmap(virt_range r) {
        if (auto ok = check_present(r); !ok) return failure(ok.error_code());
        for (std::uint64_t off = 0; off < r.size(); off += page_bytes) legacy::pd_set(*pd_, va32(r.start() + off), 0);
        for (unsigned pdi = first_pdi(r); pdi <= last_pdi(r); ++pdi) legacy::pd_free_table_if_empty(*pd_, pdi);
        return flush::of(r);
    }

    result<flush> protect(virt_range r, attributes a) {
        if (!r.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!in_space(r)) return failure(error::non_canonical);
        if (a.protection_key != 0 || a.memory_type > 7) return failure(error::invalid_attributes);
        if (auto ok = check_present(r); !ok) return failure(ok.error_code());
        for (std::uint64_t off = 0; off < r.size(); off += page_bytes) {
            const std::uint32_t va = va32(r.start() + off);
            const legacy::pte_t e = legacy::pd_get(*pd_, va);
            const legacy::pte_t kept = e & (legacy::pte_accessed | legacy::pte_dirty);
            legacy::pd_set(*pd_, va, to_pte(phys_addr{e & legacy::pte_frame}, a) | kept);
        }
        return flush::of(r);
    }

    template <class Visitor>
    result<walk_control> for_each_mapping(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (window.start().value() > top) return walk_control::proceed;
        const std::int64_t first = static_cast<std::int64_t>(window.start().value() >> 12);
        const std::int64_t last = static_cast<std::int64_t>(clip(window.last()) >> 12);
        const std::int64_t step = order == walk_order::bottom_up ? 1 : -1;
        for (std::int64_t i = step > 0 ? first : last; i >= first && i <= last;) {
            const auto pdi = static_cast<std::size_t>(i >> 10);
            if (!pd_->table[pdi]) {  // a whole absent table: jump past it
                i = step > 0 ? static_cast<std::int64_t>(pdi + 1) << 10 : (static_cast<std::int64_t>(pdi) << 10) - 1;
                continue;
            }
            const legacy::pte_t e = (*pd_->table[pdi])[static_cast<std::size_t>(i) & 1023];
            if ((e & legacy::pte_present) != 0 &&
                visit(to_mapping(static_cast<std::uint32_t>(i) << 12, e)) == walk_control::stop)
                return walk_control::stop;
            i += step;
        }
        return walk_control::proceed;
    }

    // The gaps are what lies between consecutive mappings of the window.
    template <class Visitor>
    result<walk_control> for_each_gap(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (window.start().value() > top) return walk_control::proceed;
        const std::uint64_t lo = window.start().value(), hi = clip(window.last());
        bool stopped = false;
        if (order == walk_order::bottom_up) {
            std::uint64_t next = lo;  // lowest address not yet accounted for
            auto walked = for_each_mapping(window, order, [&](const mapping& m) {
                if (m.start.value() > next && visit(gap(next, m.start.value() - 1)) == walk_control::stop) {
                    stopped = true;
                    return walk_control::stop;
                }
                next = m.start.value() + page_bytes;
                return walk_control::proceed;
            });
            if (!walked) return walked;
            if (!stopped && next <= hi) stopped = visit(gap(next, hi)) == walk_control::stop;
        } else {
            std::uint64_t below = hi + 1;  // lowest address already accounted for
            auto walked = for_each_mapping(window, order, [&](const mapping& m) {
                const std::uint64_t end = m.start.value() + page_bytes;
                if (end < below && visit(gap(end, below - 1)) == walk_control::stop) {
                    stopped = true;
                    return walk_control::stop;
                }
                below = m.start.value();
                return walk_control::proceed;
            });
            if (!walked) return walked;
            if (!stopped && below > lo) stopped = visit(gap(lo, below - 1)) == walk_control::stop;
        }
        return stopped ? walk_control::stop : walk_control::proceed;
    }

private:
    static constexpr std::uint64_t top = 0xffff'ffff;

    static std::uint32_t va32(virt_addr va) noexcept { return static_cast<std::uint32_t>(va.value()); }
    static std::uint64_t clip(virt_addr last) noexcept { return last.value() < top ? last.value() : top; }
    static virt_range gap(std::uint64_t first, std::uint64_t last) noexcept {
        return virt_range::from_bounds(virt_addr{first}, virt_addr{last});
    }
    static unsigned first_pdi(virt_range r) noexcept { return static_cast<unsigned>(r.start().value() >> 22); }
    static unsigned last_pdi(virt_range r) noexcept { return static_cast<unsigned>(r.last().value() >> 22); }
    bool in_space(virt_range r) const noexcept { return r.last().value() <= top; }

    static legacy::pte_t to_pte(phys_addr frame, attributes a) noexcept {
        legacy::pte_t e = static_cast<legacy::pte_t>(frame.value()) | legacy::pte_present;
        if (a.writable) e |= legacy::pte_write;
        if (a.user) e |= legacy::pte_user;
        if (a.global) e |= legacy::pte_global;
        if (!a.executable) e |= legacy::pte_noexec;
        if (a.memory_type & 1) e |= legacy::pte_pwt;
        if (a.memory_type & 2) e |= legacy::pte_pcd;
        if (a.memory_type & 4) e |= legacy::pte_pat;
        return e;
    }
    static mapping to_mapping(std::uint32_t va, legacy::pte_t e) noexcept {
        const attributes a{.writable = (e & legacy::pte_write) != 0,
                           .user = (e & legacy::pte_user) != 0,
                           .executable = (e & legacy::pte_noexec) == 0,
                           .global = (e & legacy::pte_global) != 0,
                           .memory_type = static_cast<std::uint8_t>(((e & legacy::pte_pwt) ? 1 : 0) |
                                                                    ((e & legacy::pte_pcd) ? 2 : 0) |
                                                                    ((e & legacy::pte_pat) ? 4 : 0))};
        return mapping{virt_addr{va}, phys_addr{e & legacy::pte_frame}, page_size::size_4k, a,
                       (e & legacy::pte_accessed) != 0, (e & legacy::pte_dirty) != 0};
    }

    bool any_present(virt_range r) const {
        return for_each_mapping(r, walk_order::bottom_up, [](const mapping&) { return walk_control::stop; })
                   .value() == walk_control::stop;
    }
    status check_present(virt_range r) const {
        if (!r.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!in_space(r)) return failure(error::non_canonical);
        bool hole = false;
        (void)for_each_gap(r, walk_order::bottom_up, [&](const virt_range&) {
            hole = true;
            return walk_control::stop;
        });
        if (hole) return failure(error::not_mapped);
        return {};
    }

    legacy::vm_pagedir* pd_;
};

static_assert(page_table<legacy_space>);

}  // namespace

// ============================================================================
// The program
// ============================================================================
namespace {

int failed = 0;
void check(bool ok, const std::string& claim) {
    std::cout << (ok ? "  [ok] " : "  [FAILED] ") << claim << '\n';
    if (!ok) ++failed;
}
std::string hex(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}
std::string text(virt_range r) { return hex(r.start().value()) + "-" + hex(r.end().value()); }

template <page_table P>
std::vector<mapping> mappings_of(const P& s) {
    std::vector<mapping> out;
    (void)s.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [&](const mapping& m) {
        out.push_back(m);
        return walk_control::proceed;
    });
    return out;
}
template <page_table P>
std::vector<virt_range> gaps_of(const P& s, walk_order order) {
    std::vector<virt_range> out;
    (void)s.for_each_gap(virt_range::of(virt_addr{0}, 1ull << 32), order, [&](const virt_range& g) {
        out.push_back(g);
        return walk_control::proceed;
    });
    return out;
}
template <class T>
bool same(const result<T>& a, const result<T>& b) {
    if (a.has_value() != b.has_value()) return false;
    if (!a.has_value()) return a.error_code() == b.error_code();
    if constexpr (std::is_same_v<T, flush>) return *a == *b;
    return true;
}

// Random map/unmap/protect on the adapter and on the reference backend, in a
// 12 MiB area that spans three legacy tables: the same answers, and after
// every step the same mappings and the same gaps in both orders.
bool differential(std::uint64_t seed, int steps) {
    legacy::vm_pagedir pd;
    legacy_space adapted(pd);
    reference::page_table model;
    pcg32 gen(seed);
    auto below = [&](std::uint64_t n) { return uniform_below(gen, n); };
    for (int step = 0; step < steps; ++step) {
        const auto r = virt_range::of(virt_addr{0x00c0'0000 + below(3072) * page_bytes}, (1 + below(8)) * page_bytes);
        const attributes a{.writable = below(2) == 1, .user = below(2) == 1, .executable = below(2) == 1,
                           .global = below(2) == 1, .memory_type = static_cast<std::uint8_t>(below(8))};
        const phys_addr frame{below(4096) * page_bytes};
        bool agree = false;
        switch (below(3)) {
        case 0:
            agree = same(adapted.map(r, frame, a, page_size::size_4k), model.map(r, frame, a, page_size::size_4k));
            break;
        case 1: agree = same(adapted.unmap(r), model.unmap(r)); break;
        default: agree = same(adapted.protect(r, a), model.protect(r, a)); break;
        }
        agree = agree && mappings_of(adapted) == mappings_of(model) &&
                gaps_of(adapted, walk_order::bottom_up) == gaps_of(model, walk_order::bottom_up) &&
                gaps_of(adapted, walk_order::top_down) == gaps_of(model, walk_order::top_down) &&
                adapted.translate(r.start()).has_value() == model.translate(r.start()).has_value();
        if (!agree) {
            std::cout << "  differs from the reference at step " << step << " (" << text(r) << ")\n";
            return false;
        }
    }
    // Tables emptied by unmap go back to the hypervisor.
    const std::size_t left = mappings_of(adapted).size();
    for (const mapping& m : mappings_of(adapted)) (void)adapted.unmap(m.range());
    return left > 0 && pd.tables == 0;
}

// A map that needs two new tables when the hypervisor can give only one fails
// with out_of_frames and leaves everything as it was, the table it did get
// included.
bool transactional() {
    legacy::vm_pagedir pd;
    legacy_space adapted(pd);
    if (!adapted.map(virt_range::of(virt_addr{0x1000}, 2 * page_bytes), phys_addr{0x10'0000}, user_read_write,
                     page_size::size_4k))
        return false;
    pd.max_tables = 2;
    const auto before = mappings_of(adapted);
    const auto across = virt_range::of(virt_addr{0x007f'f000}, 2 * page_bytes);  // the end of table 1, start of table 2
    const bool refused =
        failed_with(adapted.map(across, phys_addr{0}, read_write, page_size::size_4k), error::out_of_frames);
    return refused && mappings_of(adapted) == before && pd.tables == 1;
}

}  // namespace

// ---- the hypervisor's spaces, built with its own API ------------------------
namespace {

constexpr std::size_t ram_frames = 512;
constexpr phys_addr ram_base{0x10'0000};
struct alignas(4096) host_page {
    std::byte bytes[page_bytes];
};

// How the hypervisor maps memory today, without asreloc.
void legacy_map(legacy::vm_pagedir& pd, frame_pool<ram_frames>& ram, std::uint32_t va, std::uint32_t pages,
                legacy::pte_t flags) {
    for (std::uint32_t i = 0; i < pages; ++i) {
        const std::uint32_t at = va + i * 4096u;
        const auto frame = static_cast<legacy::pte_t>(ram.allocate_frame().value().value());
        if (legacy::pd_alloc_table(pd, at >> 22) != 0) std::abort();
        legacy::pd_set(pd, at, frame | flags | legacy::pte_present);
    }
}

using manager_t = relocation_manager<legacy_space, top_down_finder, random_victim<pcg32>, pool_shadow_store,
                                     trap_count_tracker<>, no_tlb, offset_phys_map>;

std::uint64_t seed_from_environment() {
    if (const char* s = std::getenv("ASRELOC_SEED")) return std::strtoull(s, nullptr, 0);
    return std::random_device{}();
}

}  // namespace

int main() {
    const std::uint64_t seed = seed_from_environment();
    std::cout << "1. The adapter against the reference backend (seed " << seed << ", ASRELOC_SEED to repeat)\n";
    check(differential(seed, 1000),
          "1000 random map/unmap/protect: same answers, mappings and gaps; emptied tables go back");
    check(transactional(), "a map the hypervisor has no table for fails with out_of_frames and changes nothing");

    std::cout << "2. The hypervisor's own tables, built with its legacy API\n";
    std::vector<host_page> ram_bytes(ram_frames);
    const offset_phys_map ram_map{reinterpret_cast<std::uintptr_t>(ram_bytes.data()) - ram_base.value()};
    frame_pool<ram_frames> ram{ram_base, ram_frames};
    legacy::vm_pagedir guest_pd, monitor_pd;
    using namespace legacy;
    legacy_map(guest_pd, ram, 0x0804'8000, 8, pte_user);                            // program text
    legacy_map(guest_pd, ram, 0x0805'0000, 16, pte_user | pte_write | pte_noexec);  // heap
    legacy_map(guest_pd, ram, 0xb7e0'0000, 64, pte_user);                           // libc
    legacy_map(guest_pd, ram, 0xbfff'0000, 16, pte_user | pte_write | pte_noexec);  // stack
    legacy_map(monitor_pd, ram, 0xffc0'0000, 16, pte_write);                        // the monitor itself
    legacy_space guest(guest_pd), monitor(monitor_pd);
    std::cout << "  guest: " << mappings_of(guest).size() << " pages in " << guest_pd.tables
              << " legacy tables; monitor: " << mappings_of(monitor).size() << " pages\n";

    std::cout << "3. A region finder on the adapted spaces\n";
    const std::array<const legacy_space*, 2> both{&monitor, &guest};
    const auto user_part = virt_range::of(virt_addr{0x40'0000}, 0xbfc0'0000);  // 4 MiB up to the guest kernel
    const region_request request{.size = 0x4000, .alignment = 0x4000, .window = user_part};
    auto high = top_down_finder{}.find_free(std::span<const legacy_space* const>{both}, request);
    auto low = bottom_up_finder{}.find_free(std::span<const legacy_space* const>{both}, request);
    check(high && low, "both finders found 16 KiB free in both spaces");
    if (!high || !low) return 1;
    std::cout << "  top-down: " << text(*high) << " (below the stack); bottom-up: " << text(*low) << '\n';
    check(!guest.translate(high->start()) && !guest.translate(high->last()) && high->end().value() == 0xbfff'0000,
          "the top-down range is free and ends where the stack starts");

    std::cout << "4. The relocation manager on the adapted spaces\n";
    std::array<page_slot, 4> slots{};
    std::array<shadow_entry, 4> index{};
    pool_shadow_store store{slots, index};
    pcg32 gen(seed);
    random_victim<pcg32> victims(gen);
    trap_count_tracker<> tracker;
    no_tlb tlb;
    manager_t manager(monitor, top_down_finder{}, victims, store, tracker, tlb, ram_map,
                      manager_config{.alignment = 0x4000, .window = request.window});
    const auto id = manager.add_guest_space(guest);
    check(id.has_value(), "the guest space is registered");
    if (!id) return 1;
    const std::array<stub_page, 2> stub{stub_page{ram.allocate_frame().value()},
                                        stub_page{ram.allocate_frame().value()}};
    auto placed = manager.place(stub_description{stub, virt_addr{0xffc1'0000}});
    check(placed.has_value(), "the stub (2 pages) is placed");
    if (!placed) return 1;
    const auto at = static_cast<std::uint32_t>(placed->to.start().value());
    std::cout << "  at " << text(placed->to) << "; the guest's legacy PTE there reads " << hex(pd_get(guest_pd, at))
              << '\n';
    check((pd_get(guest_pd, at) & pte_user) == 0 && (pd_get(guest_pd, at) & pte_frame) == stub[0].frame.value(),
          "it maps the stub's frame without the user bit: the guest's touch traps");
    // The guest's stack grows down, page by page, through the placement.
    bool grown = true;
    for (std::uint32_t va = 0xbffe'f000; va >= at; va -= 0x1000)
        grown = grown && manager.guest_map(*id, virt_range::of(virt_addr{va}, page_bytes), ram.allocate_frame().value(),
                                           user_read_write, page_size::size_4k);
    const auto moved = manager.placement();
    check(grown && moved && manager.stats().conflicts == 1 && (pd_get(guest_pd, at) & pte_user) != 0 &&
              !moved->overlaps(virt_range::from_bounds(virt_addr{at}, virt_addr{0xbfff'ffff})),
          "the guest's stack grew into it: one conflict, the stub moved to " +
              (moved ? text(*moved) : std::string("?")) + ", the guest got its pages");
    std::cout << (failed == 0 ? "adapter example: every check passed\n" : "adapter example FAILED\n");
    return failed == 0 ? 0 : 1;
}
