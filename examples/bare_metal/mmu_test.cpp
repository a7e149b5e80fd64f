// bare_metal.mmu: does the CPU walk the tables asreloc's x86-64 backend writes
// the way the backend says it does? Tables are built with the backend (4 KiB,
// 2 MiB and 1 GiB pages, large pages split by protect/unmap, every U/S, R/W,
// XD combination), loaded into CR3, and for thousands of addresses the CPU is
// asked to read, write and execute at CPL 0 and CPL 3. Each access must
// succeed exactly where translate() grants it, on the frame translate() names
// (every data qword carries a tag unique to its physical address), and fault
// otherwise with the error code SDM vol. 3A, 4.7 prescribes and CR2 = address.
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include <asreloc/paging/frame_pool.hpp>
#include <asreloc/paging/page_table.hpp>
#include <asreloc/x86_64/page_table.hpp>

#include "cpu_tlb.hpp"
#include "kernel.hpp"
#include "memory.hpp"
#include "serial.hpp"
#include "tests.hpp"

namespace bare_metal {
namespace {

using asreloc::attributes;
using asreloc::error;
using asreloc::mapping;
using asreloc::page_size;
using asreloc::phys_addr;
using asreloc::translation;
using asreloc::virt_addr;
using asreloc::virt_range;
using asreloc::walk_control;
using asreloc::walk_order;

using pool_type = asreloc::frame_pool<32768>;
using space_type = asreloc::x86_64::page_table<pool_type, asreloc::offset_phys_map>;
static_assert(asreloc::page_table<space_type>);

constexpr std::uint64_t kib4 = 4096;
constexpr std::uint64_t mib2 = std::uint64_t{1} << 21;
constexpr std::uint64_t gib1 = std::uint64_t{1} << 30;
constexpr std::uint64_t data_area_bytes = 16 * (std::uint64_t{1} << 20);

// Where the probe code and its stack sit in the test space (outside every window).
constexpr std::uint64_t user_code_va = 0x400000;
constexpr std::uint64_t user_stack_va = 0x600000;

// Windows the random layouts live in. Each straddles a boundary where a new
// top-level table is needed: PML4 slot 0/1 and, for 5-level paging only,
// PML5 slot 0/1 (addresses above 2^48, non-canonical with 4-level paging).
constexpr std::uint64_t window_pml4_boundary = 0x0000008000000000;
constexpr std::uint64_t window_pml5_boundary = 0x0001000000000000;
constexpr std::uint64_t window_half = 4 * gib1;

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

// splitmix64: small, freestanding, and good enough to spread addresses.
struct rng {
    std::uint64_t state;
    std::uint64_t next() noexcept {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
    }
    std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
    attributes any_attributes() noexcept {
        const auto bits = next();
        return attributes{.writable = (bits & 1) != 0, .user = (bits & 2) != 0, .executable = (bits & 4) != 0};
    }
};

// The content of every qword of the data area: a bijection of its physical
// address, so a read through the wrong frame (or the wrong offset) shows.
constexpr std::uint64_t tag_of(phys_addr p) noexcept { return ((p.value() >> 3) * 0x9e3779b97f4a7c15) ^ 0x5bd1e995; }
constexpr std::uint64_t fetch_marker = 0xc0de000000000000;


enum class access : std::uint8_t { read, write, fetch };
constexpr const char* name(access a) noexcept {
    return a == access::read ? "read" : a == access::write ? "write" : "fetch";
}

// The #PF error code bits (SDM vol. 3A, 4.7, Figure 4-12).
constexpr std::uint64_t pf_present = 1, pf_write = 2, pf_user = 4, pf_fetch = 0x10, pf_protection_key = 0x20;

struct outcome {
    bool faults;
    std::uint64_t error_code;
    bool key_bit_either = false;  // PK may or may not be reported (see predict)
};

// The control bits a round of probes runs under.
struct paging_controls {
    bool smep = false;
    bool pke = false;
    std::uint32_t pkru = 0;
};

// What SDM vol. 3A, 4.6 says the access may do, given the effective rights the
// backend reports. Supervisor: CR0.WP = 1 so writes need R/W; no SMAP, so user
// pages are readable and writable (if R/W) at CPL 0; executable at CPL 0 only
// while CR4.SMEP is clear. With CR4.PKE, PKRU's AD/WD bits for the page's key
// restrict data accesses to user pages at any CPL (4.6.2; WD binds CPL 0
// because CR0.WP = 1). An access that breaks both the ordinary rights and the
// key is reported with PK on hardware but without it by QEMU's TCG, so
// the PK bit is left open in that one case.
outcome predict(const asreloc::result<translation>& t, access a, bool user, paging_controls c) noexcept {
    bool allowed = false, key_violation = false;
    if (t.has_value()) {
        const attributes& r = t->page.attrs;
        const bool level_ok = user ? r.user : !(c.smep && a == access::fetch && r.user);
        allowed = level_ok && (a == access::read || (a == access::write && r.writable) ||
                               (a == access::fetch && r.executable));
        if (c.pke && r.user && a != access::fetch) {
            const auto bits = c.pkru >> (2 * r.protection_key);
            key_violation = (bits & 1) != 0 || (a == access::write && (bits & 2) != 0);
        }
    }
    if (allowed && !key_violation) return {false, 0};
    const std::uint64_t base = (t.has_value() ? pf_present : 0) | (a == access::write ? pf_write : 0) |
                               (user ? pf_user : 0) | (a == access::fetch ? pf_fetch : 0);
    if (!key_violation) return {true, base};
    if (allowed) return {true, base | pf_protection_key};
    return {true, base, true};
}

struct observation {
    bool faulted;
    std::uint64_t error_code;
    std::uint64_t cr2;
    std::uint64_t value;
};

observation perform(std::uint64_t va, access a, bool user, std::uint64_t write_value) noexcept {
    std::uint64_t value = 0;
    arm_probe(a == access::fetch ? va : 0);
    if (user) {
        value = enter_user(user_code_va, user_stack_va + kib4, va, static_cast<std::uint64_t>(a), write_value);
    } else if (a == access::read) {
        value = probe_read(va);
    } else if (a == access::write) {
        probe_write(va, write_value);
    } else {
        value = probe_fetch(va);
    }
    const probe_fault f = disarm_probe();
    return {f.faulted, f.error_code, f.cr2, value};
}

struct counters {
    std::uint64_t addresses = 0, accesses = 0, faults = 0, mismatches = 0, skipped = 0;
    std::uint64_t by_size[3] = {};  // probed addresses on 4K / 2M / 1G pages
    std::uint64_t unmapped = 0;
    std::uint64_t key_faults = 0;  // faults reported with the PK bit
};

class mmu_check {
public:
    mmu_check(space_type& space, pool_type& pool, phys_addr data_start, rng& random, const char* mode)
        : space_(space), pool_(pool), data_start_(data_start), random_(random), mode_(mode) {}

    counters totals;
    cpu_tlb tlb;
    paging_controls controls;

    void apply(const asreloc::result<asreloc::flush>& r, const char* what) noexcept {
        if (!r.has_value()) {
            serial::line("mmu: ", what, " failed: ", asreloc::to_string(r.error_code()));
            fail("backend call failed");
        }
        r->apply(tlb);
    }

    // The CPU is compared with translate(); translate is compared with what
    // was asked, so a backend that encodes the wrong bits consistently in both
    // directions is caught too.
    void expect_translation(virt_addr va, phys_addr pa, attributes a, const page_size* size) noexcept {
        const auto t = space_.translate(va);
        if (t.has_value() && t->phys == pa && t->page.attrs == a && (size == nullptr || t->page.size == *size)) return;
        serial::line("mmu: BACKEND ", mode_, " va=", serial::hex{va.value()}, " asked phys=", serial::hex{pa.value()},
                     " w=", a.writable ? 1 : 0, " u=", a.user ? 1 : 0, " x=", a.executable ? 1 : 0, " key=",
                     a.protection_key, " translate: ", t.has_value() ? "phys=" : "not mapped",
                     serial::hex{t.has_value() ? t->phys.value() : 0}, " w=", t.has_value() && t->page.attrs.writable ? 1 : 0,
                     " u=", t.has_value() && t->page.attrs.user ? 1 : 0, " x=",
                     t.has_value() && t->page.attrs.executable ? 1 : 0, " key=",
                     t.has_value() ? t->page.attrs.protection_key : 0);
        ++totals.mismatches;
    }

    void checked_map(virt_range r, phys_addr pa, attributes a, page_size s, const char* what) noexcept {
        apply(space_.map(r, pa, a, s), what);
        expect_translation(r.start(), pa, a, &s);
        expect_translation(r.last(), pa + (r.size() - 1), a, &s);
    }

    void checked_protect(virt_range r, attributes a, const char* what) noexcept {
        const auto before_first = space_.translate(r.start());
        const auto before_last = space_.translate(r.last());
        apply(space_.protect(r, a), what);
        if (before_first.has_value()) expect_translation(r.start(), before_first->phys, a, nullptr);
        if (before_last.has_value()) expect_translation(r.last(), before_last->phys, a, nullptr);
    }

    void checked_unmap(virt_range r, const char* what) noexcept {
        apply(space_.unmap(r), what);
        for (const virt_addr va : {r.start(), r.last()}) {
            if (asreloc::failed_with(space_.translate(va), error::not_mapped)) continue;
            serial::line("mmu: BACKEND ", mode_, " va=", serial::hex{va.value()}, " still translates after unmap");
            ++totals.mismatches;
        }
    }

    // map() that tolerates landing on something already mapped (random layouts).
    bool try_map(std::uint64_t va, phys_addr pa, attributes a, page_size s, std::uint64_t pages = 1) noexcept {
        const auto range = virt_range::of(virt_addr{va}, bytes(s) * pages);
        auto r = space_.map(range, pa, a, s);
        if (asreloc::failed_with(r, error::overlaps)) return false;
        apply(r, "map");
        expect_translation(range.start(), pa, a, &s);
        expect_translation(range.last(), pa + (range.size() - 1), a, &s);
        return true;
    }

    phys_addr random_data_frame(page_size s) noexcept {
        return data_start_ + bytes(s) * random_.below(data_area_bytes / bytes(s));
    }

    // A layout inside `window`: one 1 GiB page kept whole and one carved by
    // protect and unmap (1 GiB -> 2 MiB -> 4 KiB splits), 2 MiB pages, clusters of 4 KiB pages and runs of them, every U/S, R/W,
    // XD combination; all backed by the data area.
    void populate(virt_range window, bool one_gib_pages) noexcept {
        const std::uint64_t w = window.start().value();
        if (one_gib_pages) {
            const std::uint64_t g = w + gib1;  // windows are 1 GiB aligned
            // Both 1 GiB pages map physical 0, which holds the data area.
            checked_map(virt_range::of(virt_addr{g + 2 * gib1}, gib1), phys_addr{0}, random_.any_attributes(),
                        page_size::size_1g, "map a 1 GiB page");
            checked_map(virt_range::of(virt_addr{g}, gib1), phys_addr{0}, random_.any_attributes(), page_size::size_1g,
                        "map a 1 GiB page");
            const std::uint64_t data_off = data_start_.value();
            checked_protect(virt_range::of(virt_addr{g + data_off + mib2}, mib2), random_.any_attributes(),
                            "protect 2 MiB of a 1 GiB page");
            checked_protect(virt_range::of(virt_addr{g + data_off + 3 * mib2 + 5 * kib4}, 3 * kib4),
                            random_.any_attributes(), "protect 4 KiB pages of a 1 GiB page");
            checked_unmap(virt_range::of(virt_addr{g + data_off + 4 * mib2 + 7 * kib4}, kib4),
                          "unmap a 4 KiB page of a 1 GiB page");
        }
        const std::uint64_t slots_2m = window.size() / mib2;
        for (int i = 0; i < 24; ++i)
            try_map(w + mib2 * random_.below(slots_2m), random_data_frame(page_size::size_2m), random_.any_attributes(),
                    page_size::size_2m);
        for (int c = 0; c < 24; ++c) {
            const std::uint64_t base = w + mib2 * random_.below(slots_2m);
            for (int j = 0; j < 24; ++j)
                try_map(base + kib4 * random_.below(512), random_data_frame(page_size::size_4k), random_.any_attributes(),
                        page_size::size_4k);
            const std::uint64_t run = 1 + random_.below(16);
            const std::uint64_t first = random_.below(512 - run);
            const phys_addr pa = data_start_ + kib4 * random_.below(data_area_bytes / kib4 - run);
            try_map(base + kib4 * first, pa, random_.any_attributes(), page_size::size_4k, run);
        }
    }

    // Random protect and unmap of parts of what is mapped, each flushed
    // through the flush token it returned: stale TLB entries would show.
    // Each change hits a page whose translation the TLB holds (the address is
    // probed just before), and the same address is probed right after the
    // flush the change returned: a missing or short flush shows as the CPU
    // still using the old rights or frame.
    void mutate(virt_range window) noexcept {
        collect(window);
        for (int i = 0; i < 64 && mapping_count_ > 0; ++i) {
            const mapping& m = mappings_[random_.below(mapping_count_)];
            // The pages of m backed by the data area (collect keeps only pages that have some).
            const std::uint64_t data_end = data_start_.value() + data_area_bytes;
            const std::uint64_t lo = m.phys < data_start_ ? (data_start_ - m.phys) / kib4 : 0;
            std::uint64_t hi = (data_end - m.phys.value()) / kib4;
            if (hi > bytes(m.size) / kib4) hi = bytes(m.size) / kib4;
            if (lo >= hi) continue;
            const std::uint64_t n = 1 + random_.below(hi - lo < 8 ? hi - lo : 8);
            const std::uint64_t first = lo + random_.below(hi - lo - n + 1);
            const auto r = virt_range::of(m.start + kib4 * first, kib4 * n);
            const std::uint64_t va = r.start().value() + kib4 * random_.below(n) + 16 * random_.below(kib4 / 16);
            check_address(va, space_.translate(virt_addr{va}));  // warms the TLB
            if (random_.below(3) == 0) checked_unmap(r, "unmap");
            else checked_protect(r, random_.any_attributes(), "protect");
            const auto after = space_.translate(virt_addr{va});
            if (!after.has_value() || in_data_area(after->phys)) check_address(va, after);
            ++changes_checked;
            collect(window);
        }
    }
    unsigned changes_checked = 0;

    // QEMU's TCG widens an invlpg to a full flush once a large page was used
    // through the same TLB (kernel accesses always do: the kernel image is on
    // 2 MiB pages), so a short flush can hide in the random changes above.
    // CPL 3 accesses have a TLB of their own: after a CR3 reload, warm it on
    // 4 KiB user pages only, change all of them in one call, apply its flush,
    // and every page must show the change at once.
    void check_flush_precision(virt_range window) noexcept {
        collect(window);
        const virt_range* gap = nullptr;
        for (unsigned i = 0; i < gap_count_ && gap == nullptr; ++i)
            if (gap_count_ > 0 && gaps_[i].size() >= 64 * kib4) gap = &gaps_[i];
        if (gap == nullptr) fail("flush check: no 256 KiB gap in the window");
        constexpr std::uint64_t run = 8;
        for (unsigned round = 0; round < 6; ++round) {
            const auto r = virt_range::of(gap->start() + round * (run + 1) * kib4, run * kib4);
            const phys_addr pa = data_start_ + kib4 * random_.below(data_area_bytes / kib4 - run);
            checked_map(r, pa, asreloc::user_read_write, page_size::size_4k, "map for the flush check");
            write_cr3(read_cr3());
            for (std::uint64_t p = 0; p < run; ++p) {
                const std::uint64_t va = r.start().value() + p * kib4 + 16 * random_.below(kib4 / 16);
                const auto got = perform(va, access::read, true, 0);
                if (got.faulted || got.value != tag_of(pa + (va - r.start().value()))) fail("flush check: warm-up read failed");
            }
            if (round % 3 == 0) checked_unmap(r, "unmap for the flush check");
            else if (round % 3 == 1) checked_protect(r, asreloc::read_write, "protect to supervisor for the flush check");
            else checked_protect(r, attributes{.user = true}, "protect to read-only for the flush check");
            for (std::uint64_t p = 0; p < run; ++p) {
                const std::uint64_t va = r.start().value() + p * kib4 + 16 * random_.below(kib4 / 16);
                check_address(va, space_.translate(virt_addr{va}));
            }
            if (round % 3 != 0) checked_unmap(r, "unmap after the flush check");
            ++flush_rounds;
        }
    }
    unsigned flush_rounds = 0;

    // coalesce: a table of 512 contiguous, equal leaves becomes one large
    // leaf; the CPU must then translate through it exactly as before (the
    // old translations are warmed in the TLB first and the returned flush
    // applied). Done for 4 KiB -> 2 MiB, and 2 MiB -> 1 GiB when the CPU has
    // 1 GiB pages.
    void check_coalesce(virt_range window, bool one_gib_pages) noexcept {
        const page_size sizes[2] = {page_size::size_2m, page_size::size_1g};
        for (const page_size large : sizes) {
            if (large == page_size::size_1g && !one_gib_pages) continue;
            const page_size small = large == page_size::size_2m ? page_size::size_4k : page_size::size_2m;
            // A slot of its own, 1 GiB aligned, beyond the random layouts.
            const virt_addr slot{window.end().value() + 16 * gib1 + (large == page_size::size_1g ? gib1 : 0)};
            // Backing: a 2 MiB chunk of the data area, or physical 0 for 1 GiB.
            const phys_addr pa = large == page_size::size_2m ? random_data_frame(page_size::size_2m) : phys_addr{0};
            const attributes a = random_.any_attributes();
            const auto r = virt_range::of(slot, bytes(large));
            checked_map(r, pa, a, small, "map small pages to coalesce");
            for (int k = 0; k < 8; ++k) probe_inside(r, pa);
            apply(space_.coalesce(r), "coalesce");
            const auto t = space_.translate(slot);
            if (!t.has_value() || t->page.size != large || t->phys != pa || !(t->page.attrs == a)) {
                serial::line("mmu: BACKEND ", mode_, " coalesce did not leave one ", bytes(large), "-byte page at ",
                             serial::hex{slot.value()});
                ++totals.mismatches;
            }
            for (int k = 0; k < 32; ++k) probe_inside(r, pa);
            checked_unmap(r, "unmap the coalesced page");
            ++coalesced;
        }
    }
    unsigned coalesced = 0;

    // A probe at a random 16-byte slot of `r` whose backing lies in the data area.
    void probe_inside(virt_range r, phys_addr pa) noexcept {
        const std::uint64_t data_end = data_start_.value() + data_area_bytes;
        const std::uint64_t lo = pa < data_start_ ? data_start_ - pa : 0;
        std::uint64_t hi = data_end - pa.value();
        if (hi > r.size()) hi = r.size();
        const std::uint64_t va = r.start().value() + lo + 16 * random_.below((hi - lo) / 16);
        const auto t = space_.translate(virt_addr{va});
        if (t.has_value() && !in_data_area(t->phys)) return;
        check_address(va, t);
    }

    void probe_window(virt_range window, unsigned addresses) noexcept {
        collect(window);
        for (unsigned i = 0, draws = 0; i < addresses; ++draws) {
            if (draws > 100 * addresses) fail("cannot draw probe addresses");
            const std::uint64_t va = pick_address(window);
            if (va == 0) continue;
            const auto t = space_.translate(virt_addr{va});
            if (!t.has_value() && !asreloc::failed_with(t, error::not_mapped)) {
                serial::line("mmu: translate(", serial::hex{va}, ") failed: ", asreloc::to_string(t.error_code()));
                fail("translate failed");
            }
            if (t.has_value() && !in_data_area(t->phys)) {
                ++totals.skipped;  // would write outside the tagged frames
                continue;
            }
            check_address(va, t);
            ++i;
        }
    }

    // Accessed and dirty bits: after a clear (and the flush it asks for), a
    // read must set A only, a write A and D, no access neither (SDM vol. 3A,
    // 4.8). Checked on 4 KiB and 2 MiB leaves, whole pages at a time.
    void check_accessed_dirty(virt_range window) noexcept {
        if constexpr (asreloc::accessed_dirty_page_table<space_type>) {
            collect(window);
            unsigned checked = 0, large = 0;
            for (unsigned i = 0; i < 2 * mapping_count_ && checked < 48; ++i) {
                // First pass: 2 MiB leaves (up to 24), second: 4 KiB ones.
                const mapping& m = mappings_[i % mapping_count_];
                const bool first_pass = i < mapping_count_;
                if (m.size != (first_pass ? page_size::size_2m : page_size::size_4k) || !m.attrs.writable) continue;
                if (first_pass && large == 24) continue;
                if (m.phys < data_start_ || m.phys.value() + 16 > data_start_.value() + data_area_bytes) continue;
                const auto r = m.range();
                // Warm the TLB with a writable translation first: without the
                // flush query_and_clear asks for, the CPU would not set A or D again.
                (void)perform(m.start.value(), access::write, false, tag_of(m.phys));
                const auto cleared = space_.query_and_clear(r, asreloc::ad_bits::both);
                if (!cleared.has_value()) fail("query_and_clear failed");
                cleared->invalidate.apply(tlb);
                const unsigned action = checked % 3;  // 0 none, 1 read, 2 write
                const std::uint64_t va = m.start.value();
                if (action == 1) (void)perform(va, access::read, false, 0);
                if (action == 2) (void)perform(va, access::write, false, tag_of(m.phys));  // same value: only D changes
                const auto sample = space_.query_and_clear(r, asreloc::ad_bits::both);
                if (!sample.has_value()) fail("query_and_clear failed");
                sample->invalidate.apply(tlb);
                const std::uint64_t pages = bytes(m.size) / kib4;
                const std::uint64_t want_a = action != 0 ? pages : 0, want_d = action == 2 ? pages : 0;
                if (sample->accessed_pages != want_a || sample->dirty_pages != want_d) {
                    serial::line("mmu: A/D MISMATCH ", mode_, " va=", serial::hex{va}, " size=", serial::hex{bytes(m.size)},
                                 " action=", action, " accessed_pages=", sample->accessed_pages, " (want ", want_a,
                                 ") dirty_pages=", sample->dirty_pages, " (want ", want_d, ")");
                    ++totals.mismatches;
                }
                ++checked;
                if (first_pass) ++large;
            }
            serial::line("mmu: accessed/dirty bits checked on ", checked, " leaves (", large, " of 2 MiB)");
            ad_checked = checked;
        } else {
            serial::line("mmu: the backend has no query_and_clear: accessed/dirty bits not checked");
        }
    }
    unsigned ad_checked = 0;

    // Gives about half of the pages in the window a random key 1..15 through
    // protect, keeping their other attributes.
    void assign_protection_keys(virt_range window) noexcept {
        collect(window);
        unsigned keyed = 0;
        for (unsigned i = 0; i < mapping_count_; ++i) {
            if (random_.below(2) == 0) continue;
            attributes a = mappings_[i].attrs;
            a.protection_key = static_cast<std::uint8_t>(1 + random_.below(15));
            checked_protect(mappings_[i].range(), a, "protect with a protection key");
            ++keyed;
        }
        serial::line("mmu: ", keyed, " pages given protection keys");
    }

    // Touching a gap: the #PF hook maps a fresh frame with the backend and
    // the CPU retries the access, which then reads the frame's tags.
    void check_demand_paging(virt_range window) noexcept;

    bool handle_demand_fault(std::uint64_t cr2) noexcept {
        if (!demand_.contains(virt_addr{cr2})) return false;
        const auto frame = pool_.allocate_frame();
        if (!frame.has_value()) fail("demand paging: out of frames");
        auto* q = phys_ptr<std::uint64_t>(*frame);
        for (std::uint64_t k = 0; k < kib4 / 8; ++k) q[k] = tag_of(*frame + 8 * k);
        apply(space_.map(virt_range::of(virt_addr{cr2 & ~(kib4 - 1)}, kib4), *frame, asreloc::read_write,
                         page_size::size_4k),
              "demand map");
        demand_faults_ = demand_faults_ + 1;
        return true;
    }

private:
    bool in_data_area(phys_addr p) const noexcept {
        return p >= data_start_ && p.value() + 16 <= data_start_.value() + data_area_bytes;
    }

    void collect(virt_range window) noexcept {
        mapping_count_ = 0;
        gap_count_ = 0;
        const auto m = space_.for_each_mapping(window, walk_order::bottom_up, [this](const mapping& m) noexcept {
            // Only pages backed (at least partly) by the tagged data area can be probed.
            const bool backed = m.phys.value() < data_start_.value() + data_area_bytes &&
                                m.phys.value() + bytes(m.size) > data_start_.value();
            if (backed && mapping_count_ < max_mappings) mappings_[mapping_count_++] = m;
            return walk_control::proceed;
        });
        const auto g = space_.for_each_gap(window, walk_order::bottom_up, [this](const virt_range& r) noexcept {
            if (gap_count_ < max_gaps) gaps_[gap_count_++] = r;
            return walk_control::proceed;
        });
        if (!m.has_value() || !g.has_value()) fail("a walk failed");
    }

    // Large pages are few: draw a page size first so each gets its share.
    const mapping& pick_mapping() noexcept {
        const page_size wanted[3] = {page_size::size_4k, page_size::size_2m, page_size::size_1g};
        const page_size s = wanted[random_.below(3)];
        const auto from = random_.below(mapping_count_);
        for (unsigned k = 0; k < mapping_count_; ++k) {
            const mapping& m = mappings_[(from + k) % mapping_count_];
            if (m.size == s) return m;
        }
        return mappings_[from];
    }

    // 0 when the draw gave nothing usable; the caller draws again.
    std::uint64_t pick_address(virt_range window) noexcept {
        const auto kind = random_.below(10);
        if (kind < 6 && mapping_count_ > 0) {
            const mapping& m = pick_mapping();
            // A random 16-byte slot of the part of the page backed by the data area.
            const std::uint64_t lo = m.phys < data_start_ ? data_start_ - m.phys : 0;
            const std::uint64_t data_end = data_start_.value() + data_area_bytes;
            if (m.phys.value() >= data_end) return 0;
            std::uint64_t hi = data_end - m.phys.value();
            if (hi > bytes(m.size)) hi = bytes(m.size);
            if (lo >= hi) return 0;
            return m.start.value() + lo + 16 * random_.below((hi - lo) / 16);
        }
        if (kind < 8 && mapping_count_ > 0) {
            const mapping& m = mappings_[random_.below(mapping_count_)];
            const std::uint64_t edges[4] = {m.start.value(), m.start.value() + bytes(m.size) - 16,
                                            m.start.value() - 16, m.start.value() + bytes(m.size)};
            const std::uint64_t va = edges[random_.below(4)];
            return window.contains(virt_addr{va}) ? va : 0;
        }
        if (gap_count_ == 0) return 0;
        const virt_range& g = gaps_[random_.below(gap_count_)];
        return g.start().value() + 16 * random_.below(g.size() / 16);
    }

    void check_address(std::uint64_t va, const asreloc::result<translation>& t) noexcept {
        ++totals.addresses;
        if (t.has_value()) {
            ++totals.by_size[t->page.size == page_size::size_4k ? 0 : t->page.size == page_size::size_2m ? 1 : 2];
        } else {
            ++totals.unmapped;
        }
        const phys_addr p = t.has_value() ? t->phys : phys_addr{};
        auto* cell = t.has_value() ? phys_ptr<volatile std::uint64_t>(p) : nullptr;
        for (const bool user : {false, true}) {
            for (const access a : {access::read, access::write, access::fetch}) {
                const std::uint64_t written = ~tag_of(p);
                if (cell != nullptr && a == access::fetch) write_fetch_target(cell, tag_of(p) ^ fetch_marker);
                const outcome want = predict(t, a, user, controls);
                const observation got = perform(va, a, user, written);
                ++totals.accesses;
                if (got.faulted) ++totals.faults;
                if (got.faulted && (got.error_code & pf_protection_key) != 0) ++totals.key_faults;
                bool ok = want.faults == got.faulted;
                const std::uint64_t ignored = want.key_bit_either ? pf_protection_key : 0;
                if (ok && got.faulted) ok = (got.error_code & ~ignored) == want.error_code && got.cr2 == va;
                if (ok && !got.faulted && cell != nullptr) {
                    if (a == access::read) ok = got.value == tag_of(p);
                    if (a == access::write) ok = cell[0] == written;
                    if (a == access::fetch) ok = got.value == (tag_of(p) ^ fetch_marker);
                }
                if (ok && got.faulted && cell != nullptr && a == access::write) ok = cell[0] == tag_of(p);
                if (cell != nullptr) {
                    cell[0] = tag_of(p);
                    cell[1] = tag_of(p + 8);
                }
                if (!ok) report(va, t, a, user, want, got);
            }
        }
    }

    // movabs $imm, %rax; ret
    static void write_fetch_target(volatile std::uint64_t* cell, std::uint64_t imm) noexcept {
        auto* b = reinterpret_cast<volatile std::uint8_t*>(cell);
        b[0] = 0x48;
        b[1] = 0xb8;
        for (int k = 0; k < 8; ++k) b[2 + k] = static_cast<std::uint8_t>(imm >> (8 * k));
        b[10] = 0xc3;
    }

    void report(std::uint64_t va, const asreloc::result<translation>& t, access a, bool user, outcome want,
                observation got) noexcept {
        if (++totals.mismatches > 16) return;
        serial::print("mmu: MISMATCH ");
        serial::line(mode_, " va=", serial::hex{va}, " cpl=", user ? 3 : 0, " ", name(a), " backend: ",
                     t.has_value() ? "mapped" : "not mapped", " phys=", serial::hex{t.has_value() ? t->phys.value() : 0},
                     " w=", t.has_value() && t->page.attrs.writable ? 1 : 0, " u=",
                     t.has_value() && t->page.attrs.user ? 1 : 0, " x=", t.has_value() && t->page.attrs.executable ? 1 : 0,
                     " key=", t.has_value() ? t->page.attrs.protection_key : 0, " pkru=", serial::hex{controls.pkru},
                     " expected=", want.faults ? "fault " : "ok ", serial::hex{want.error_code}, " got=",
                     got.faulted ? "fault " : "ok ", serial::hex{got.error_code}, " cr2=", serial::hex{got.cr2},
                     " value=", serial::hex{got.value});
    }

    static constexpr unsigned max_mappings = 2048;
    static constexpr unsigned max_gaps = 1024;

    space_type& space_;
    pool_type& pool_;
    phys_addr data_start_;
    rng& random_;
    const char* mode_;
    mapping mappings_[max_mappings]{};
    unsigned mapping_count_ = 0;
    virt_range gaps_[max_gaps]{};
    unsigned gap_count_ = 0;
    virt_range demand_{};
    volatile unsigned demand_faults_ = 0;  // written by the fault hook
};

mmu_check* active_check = nullptr;

bool demand_fault_hook(trap_frame& f, std::uint64_t cr2) noexcept {
    return !f.from_user() && active_check != nullptr && active_check->handle_demand_fault(cr2);
}

void mmu_check::check_demand_paging(virt_range window) noexcept {
    collect(window);
    const virt_range* gap = nullptr;
    for (unsigned i = 0; i < gap_count_ && gap == nullptr; ++i)
        if (gaps_[i].size() >= 64 * kib4) gap = &gaps_[i];
    if (gap == nullptr) fail("demand paging: no 256 KiB gap in the window");
    demand_ = virt_range::of(gap->start(), 16 * kib4);
    demand_faults_ = 0;
    active_check = this;
    set_page_fault_hook(demand_fault_hook);
    for (unsigned k = 0; k < 16; ++k) {
        auto* q = reinterpret_cast<volatile std::uint64_t*>(demand_.start().value() + k * kib4 + 8 * k);
        const std::uint64_t first = *q;  // faults once, is mapped by the hook, retried
        asm volatile("" ::: "memory");
        const auto t = space_.translate(virt_addr{reinterpret_cast<std::uint64_t>(q)});
        if (!t.has_value() || first != tag_of(t->phys)) fail("demand paging: the retried read saw the wrong frame");
        *q = ~first;  // writable now, no further fault
        if (*phys_ptr<volatile std::uint64_t>(t->phys) != ~first) fail("demand paging: the write missed the frame");
    }
    set_page_fault_hook(nullptr);
    active_check = nullptr;
    if (demand_faults_ != 16) fail("demand paging: expected exactly one fault per page");
    serial::line("mmu: resumable #PF: 16 pages mapped on demand by the fault hook, 16 faults, accesses retried");
    demand_ = virt_range{};
}

// --- the space ---------------------------------------------------------------

alignas(pool_type) std::byte pool_storage[sizeof(pool_type)];
alignas(space_type) std::byte space_storage[sizeof(space_type)];
alignas(mmu_check) std::byte check_storage[sizeof(mmu_check)];

bool cpu_has_1g_pages() noexcept { return (cpuid(0x80000001).edx & (1u << 26)) != 0; }

void map_or_fail(space_type& s, std::uint64_t va, std::uint64_t size, phys_addr pa, attributes a, page_size ps,
                 const char* what) noexcept {
    const auto r = s.map(virt_range::of(virt_addr{va}, size), pa, a, ps);
    if (!r.has_value()) {
        serial::line("mmu: mapping ", what, " failed: ", asreloc::to_string(r.error_code()));
        fail("cannot build the test space");
    }
    r->ignore();  // the space is not loaded yet
}

}  // namespace

void run_kernel_test(const physical_layout& layout, std::uint64_t seed) noexcept {
    const bool five = (read_cr4() & cr4_la57) != 0;
    const char* mode = five ? "five_level" : "four_level";
    serial::line("mmu: seed=", seed, " mode=", mode);
#ifdef ASRELOC_BOOT_LA57
    if (!five) {
        serial::line("mmu: five_level unavailable (CPUID.7.0:ECX[16] = 0), skipped");
        qemu_exit(exit_code::skip);
    }
#endif
    rng random{seed};
    const phys_addr data_start{align_up(layout.kernel_end.value(), mib2)};
    const phys_addr pool_start = data_start + data_area_bytes;
    std::uint64_t frames = (layout.region_end - pool_start) / kib4;
    if (frames > 32768) frames = 32768;
    auto& pool = *new (pool_storage) pool_type(pool_start, frames);

    // Tag the data area.
    for (std::uint64_t off = 0; off < data_area_bytes; off += 8)
        *phys_ptr<std::uint64_t>(data_start + off) = tag_of(data_start + off);

    const auto& dm = direct_map();
    const bool one_gib = cpu_has_1g_pages();
    if (!one_gib) serial::line("mmu: no 1 GiB pages on this CPU (CPUID.80000001H:EDX[26] = 0): 4K/2M only");
    auto made = space_type::create(pool, dm,
                                   five ? asreloc::x86_64::paging_mode::five_level : asreloc::x86_64::paging_mode::four_level,
                                   asreloc::x86_64::features{.pages_1g = one_gib});
    if (!made.has_value()) fail("page_table::create failed");
    auto& space = *new (space_storage) space_type(std::move(made).value());

    // What the kernel itself needs in the test space: its image, the direct
    // map, and a user page for the CPL 3 probe with its stack.
    const std::uint64_t image = align_up(layout.kernel_end.value(), mib2);
    map_or_fail(space, kernel_base, image, phys_addr{0}, attributes{.writable = true, .executable = true},
                page_size::size_2m, "the kernel image");
    map_or_fail(space, direct_map_base, align_up(layout.ram_end.value(), mib2), phys_addr{0}, asreloc::read_write,
                page_size::size_2m, "the direct map");
    map_or_fail(space, user_code_va, kib4, phys_addr{reinterpret_cast<std::uint64_t>(user_probe_page) - kernel_base},
                attributes{.user = true, .executable = true}, page_size::size_4k, "the user probe");
    const auto stack = pool.allocate_frame();
    if (!stack.has_value()) fail("no frame for the user stack");
    map_or_fail(space, user_stack_va, kib4, *stack, asreloc::user_read_write, page_size::size_4k, "the user stack");
    if (reinterpret_cast<std::uint64_t>(user_probe_page) != reinterpret_cast<std::uint64_t>(user_probe_start))
        fail("the user probe is not at the start of its page");

    // 4-level spaces must refuse what only 5-level paging can reach.
    if (!five) {
        const auto r = space.map(virt_range::of(virt_addr{window_pml5_boundary}, kib4), data_start, asreloc::read_only,
                                 page_size::size_4k);
        if (!asreloc::failed_with(r, error::non_canonical)) fail("a 4-level space accepted a 57-bit address");
    }

    write_cr3(space.root().value());
    serial::line("mmu: CR3 loaded with the backend's ", five ? "PML5" : "PML4", " at ", serial::hex{space.root().value()},
                 ", ", pool.allocated_count(), " frames in tables");

    auto& check = *new (check_storage) mmu_check(space, pool, data_start, random, mode);
    virt_range windows[2] = {virt_range::of(virt_addr{window_pml4_boundary - window_half}, 2 * window_half),
                             virt_range::of(virt_addr{window_pml5_boundary - window_half}, 2 * window_half)};
    const unsigned window_count = five ? 2 : 1;
    for (unsigned w = 0; w < window_count; ++w) {
        check.populate(windows[w], one_gib);
        check.probe_window(windows[w], 1500);
        check.mutate(windows[w]);
        check.probe_window(windows[w], 1500);
        serial::line("mmu: window ", serial::hex{windows[w].start().value()}, "-", serial::hex{windows[w].last().value()},
                     " probed, ", check.totals.mismatches, " mismatches so far");
    }
    // Supervisor-mode execution prevention turns every CPL 0 fetch from a user
    // page into a protection fault (SDM vol. 3A, 4.6.1): one more round with it.
    if ((cpuid(7, 0).ebx & (1u << 7)) != 0) {
        write_cr4(read_cr4() | cr4_smep);
        check.controls.smep = true;
        check.probe_window(windows[0], 1000);
        write_cr4(read_cr4() & ~cr4_smep);
        check.controls.smep = false;
        serial::line("mmu: CR4.SMEP round done, ", check.totals.mismatches, " mismatches so far");
    } else {
        serial::line("mmu: no SMEP on this CPU (CPUID.7.0:EBX[7] = 0), SMEP round skipped");
    }
    // Protection keys (CPUID.7.0:ECX[3]): give pages keys 1..15 with protect,
    // then probe under a random PKRU that leaves key 0 (the probe's own user
    // stack) open.
    if ((cpuid(7, 0).ecx & (1u << 3)) != 0) {
        check.assign_protection_keys(windows[0]);
        write_cr4(read_cr4() | cr4_pke);
        check.controls.pke = true;
        for (int round = 0; round < 4; ++round) {
            check.controls.pkru = static_cast<std::uint32_t>(random.next()) & ~3u;
            write_pkru(check.controls.pkru);
            check.probe_window(windows[0], 400);
        }
        write_pkru(0);
        check.controls.pkru = 0;
        write_cr4(read_cr4() & ~cr4_pke);
        check.controls.pke = false;
        serial::line("mmu: CR4.PKE rounds done, ", check.totals.key_faults, " faults with PK set, ",
                     check.totals.mismatches, " mismatches so far");
    } else {
        serial::line("mmu: no protection keys on this CPU (CPUID.7.0:ECX[3] = 0), PKE rounds skipped");
    }
    check.check_coalesce(windows[0], one_gib);
    serial::line("mmu: coalesce: ", check.coalesced, " tables merged into large pages, ", check.totals.mismatches,
                 " mismatches so far");
    check.check_flush_precision(windows[0]);
    serial::line("mmu: flush precision: ", check.flush_rounds, " multi-page changes seen at once by CPL 3, ",
                 check.totals.mismatches, " mismatches so far");
    check.check_accessed_dirty(windows[0]);
    check.check_demand_paging(windows[0]);

    const auto& c = check.totals;
    serial::line("mmu: mode=", mode, " windows=", window_count, " addresses=", c.addresses, " (4K=", c.by_size[0],
                 " 2M=", c.by_size[1], " 1G=", c.by_size[2], " unmapped=", c.unmapped, ") accesses=", c.accesses,
                 " faults=", c.faults, " live_changes=", check.changes_checked, " invlpg=", check.tlb.pages, " cr3_reloads=", check.tlb.reloads,
                 " mismatches=", c.mismatches);
    if (c.mismatches != 0) fail("the CPU and the backend disagree");
    serial::line("mmu: PASS ", mode);
    qemu_exit(exit_code::pass);
}

}  // namespace bare_metal
