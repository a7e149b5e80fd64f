// One guest replayed through the real relocation manager over the real x86-64
// backend, with one combination of policies: the guest's mappings become
// guest_map/guest_unmap calls (page-table changes in the guest space), its
// accesses walk the real tables as the MMU would (a stub page faults into
// handle_fault, displaced content is served by access_displaced from the
// shadow store), and the monitor's timer samples hotness and calls tick().
#pragma once

#include <algorithm>
#include <array>
#include <iterator>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/manager/relocation_manager.hpp"
#include "asreloc/paging/tlb.hpp"
#include "asreloc/policy/accessed_bit_tracker.hpp"
#include "asreloc/policy/best_fit_finder.hpp"
#include "asreloc/policy/coldest_victim.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/policy/pool_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "asreloc/x86_64/stub_layout.hpp"
#include "lab/guest_workload.hpp"
#include "lab/sim/cpu_walk.hpp"
#include "lab/sim/host_memory.hpp"

namespace asreloc::lab {

enum class finder_kind : std::uint8_t { bottom_up, top_down, best_fit };
enum class victim_kind : std::uint8_t { random_victim, coldest_victim };
enum class tracker_kind : std::uint8_t { trap_count, accessed_bit };

inline const char* to_string(finder_kind k) noexcept {
    return k == finder_kind::bottom_up ? "bottom_up" : k == finder_kind::top_down ? "top_down" : "best_fit";
}
inline const char* to_string(victim_kind k) noexcept {
    return k == victim_kind::random_victim ? "random_victim" : "coldest_victim";
}
inline const char* to_string(tracker_kind k) noexcept {
    return k == tracker_kind::trap_count ? "trap_count" : "accessed_bit";
}

struct policy_combo {
    finder_kind finder = finder_kind::bottom_up;
    victim_kind victims = victim_kind::random_victim;
    tracker_kind tracker = tracker_kind::trap_count;

    std::string name() const {
        return std::string(to_string(finder)) + "+" + to_string(victims) + "+" + to_string(tracker);
    }
};

inline std::vector<policy_combo> all_policy_combos() {
    std::vector<policy_combo> out;
    for (auto f : {finder_kind::bottom_up, finder_kind::top_down, finder_kind::best_fit})
        for (auto v : {victim_kind::random_victim, victim_kind::coldest_victim})
            for (auto t : {tracker_kind::trap_count, tracker_kind::accessed_bit}) out.push_back({f, v, t});
    return out;
}

inline constexpr std::size_t max_stub_pages = 64;
// Pages of guest mappings the accessed-bit tracker harvests per hop period.
inline constexpr std::uint64_t harvest_budget = 4096;

struct replay_config {
    std::uint64_t stub_pages = 4;  // 16 KiB: IDT + GDT/TSS + entry code + data
    // The guest's space is folded into [0, window) when window is non-zero and
    // smaller than the guest's own space: address va becomes va mod window,
    // so a 64-bit trace runs as if the guest had only that much space.
    std::uint64_t window = 0;
    std::uint32_t hop_period = 10;  // ticks between judgements (a tick: 100,000 accesses or one mapping call)
    std::uint32_t settle_periods = 1;
    std::uint64_t seed = 1;
};

struct replay_result {
    statistics stats;
    bool placed = false;
    bool first_placement_victim = false;
    std::optional<virt_range> first_placement;  // where the stub was first placed
    std::optional<virt_range> final_placement;  // and where it was after the last step
    std::uint64_t accesses = 0;          // guest accesses replayed
    std::uint64_t native_accesses = 0;   // of them, served by the tables without a trap
    std::uint64_t mapping_calls = 0;     // guest_map + guest_unmap calls made
    std::uint64_t ticks = 0;
    std::uint64_t sampled_pages = 0;     // pages whose accessed bits were harvested (accessed_bit tracker)
    std::uint64_t hops_to_settle = 0;    // hops before hopping last settled (all hops when it ends unsettled)
    bool settled = false;
    std::uint64_t failures = 0;          // manager calls that answered an error
    std::vector<std::string> failure_samples;
    std::vector<std::uint32_t> shadow_per_tick;  // shadow accesses in each tick interval
    // After the last step every pointer in the stub's IDT, GDT, TSS and
    // GDTR/IDTR images points into the final placement (fixups followed every move).
    bool fixups_consistent = false;
};

namespace replay_detail {

using space = x86_64::page_table<host_memory, offset_phys_map>;

// The stub the lab moves: real x86-64 system structures (stub_tables: 32
// interrupt gates into the entry-code page, GDT with the TSS descriptor, TSS
// with RSP0 and IST1 in the data page, GDTR/IDTR images) in its first two
// frames, entry code and data pages after them, and the built-in fixups that
// make every pointer follow each move. Needs at least 4 pages.
class lab_stub {
public:
    static constexpr virt_addr built_for{0x10000};

    lab_stub(host_memory& memory, std::uint64_t pages, x86_64::paging_mode mode) : memory_(memory) {
        auto tables = pages >= 4 ? memory.allocate_consecutive(2) : failure(error::out_of_frames);
        if (tables) {
            frames_.push_back(*tables);
            frames_.push_back(*tables + page_bytes);
        }
        while (frames_.size() < pages) {
            auto f = memory.allocate_frame();
            if (!f) break;
            frames_.push_back(*f);
        }
        for (phys_addr f : frames_) std::memset(memory.map().to_virt(f), 0, page_bytes);
        if (!tables || frames_.size() != pages) return;
        tables_ = ::new (static_cast<void*>(memory.map().to_virt(frames_[0]))) x86_64::stub_tables{};
        const x86_64::stub_layout shape{.entry_code_pages = 1, .data_pages = pages - 3};
        const std::uint64_t entry = built_for.value() + shape.entry_code_offset();
        for (std::size_t v = 0; v < 32; ++v)
            tables_->idt_gates[v] =
                x86_64::idt_gate::make(entry + 16 * v, x86_64::kernel_code_selector, x86_64::system_type::interrupt_gate);
        tables_->place(built_for);
        tables_->tss.rsp[0] = built_for.value() + shape.size();
        tables_->tss.ist[0] = built_for.value() + shape.size() - 2048;
        fixups_.emplace(*tables_, pages * page_bytes, mode);  // the mode: which stack tops are canonical
    }
    lab_stub(const lab_stub&) = delete;
    lab_stub& operator=(const lab_stub&) = delete;
    ~lab_stub() {
        for (phys_addr f : frames_) memory_.deallocate_frame(f);
    }

    bool complete() const noexcept { return tables_ != nullptr; }
    const std::vector<phys_addr>& frames() const noexcept { return frames_; }
    std::array<fixup, 5> fixups() noexcept { return fixups_->list(); }

    // Whether every pointer into the stub points into it at `placement`:
    // what the fixups must have kept true through every move.
    bool consistent_at(virt_addr placement) const noexcept {
        const std::uint64_t b = placement.value(), delta = b - built_for.value();
        const x86_64::stub_tables& t = *tables_;
        const std::uint64_t entry = b + 2 * page_bytes;
        for (std::size_t v = 0; v < 32; ++v)
            if (t.idt_gates[v].offset() != entry + 16 * v) return false;
        const std::uint64_t gdtr = t.gdtr.base, idtr = t.idtr.base, rsp0 = t.tss.rsp[0], ist1 = t.tss.ist[0];
        // Stack tops wrap to 0 at 2^64 as the CPU's RSP does (a stub at the very top).
        const std::uint64_t top = built_for.value() + frames_.size() * page_bytes + delta;
        return t.gdt.tss.base() == b + x86_64::stub_tables::tss_offset() &&
               gdtr == b + x86_64::stub_tables::gdt_offset() && idtr == b + x86_64::stub_tables::idt_offset() &&
               rsp0 == top && ist1 == top - 2048;
    }

private:
    host_memory& memory_;
    std::vector<phys_addr> frames_;
    x86_64::stub_tables* tables_ = nullptr;
    std::optional<x86_64::stub_fixups> fixups_;
};

struct hop_log {
    std::uint64_t hops = 0;
    std::uint64_t hops_at_last_settle = 0;
    bool settled = false;  // hopping is settled now
};

// The manager's trace sink: the hops made before hopping last settled.
struct hop_sink {
    hop_log* log = nullptr;
    void record(const trace_event& e) noexcept {
        if (e.kind == trace_kind::hopped) ++log->hops;
        if (e.kind == trace_kind::settled) {
            log->settled = true;
            log->hops_at_last_settle = log->hops;
        }
        if (e.kind == trace_kind::resumed) log->settled = false;
    }
};

inline constexpr manager_limits lab_limits{.guest_spaces = 1, .stub_pages = max_stub_pages, .fixups = 8, .pins = 1};

inline std::string hex(std::uint64_t v) { return to_hex(v); }

template <class Finder, class Victims, class Tracker>
class guest_replay {
public:
    using manager = relocation_manager<space, Finder, Victims, pool_shadow_store, Tracker, no_tlb, offset_phys_map,
                                       hop_sink, lab_limits>;

    guest_replay(host_memory& memory, const guest_workload& w, const replay_config& c, space& monitor, space& guest,
                 const Finder& finder, Victims& victims, pool_shadow_store& store, Tracker& tracker)
        : memory_(memory), map_(memory.map()), workload_(w), config_(c), monitor_(monitor), guest_(guest),
          finder_(finder), tracker_(tracker),
          manager_(monitor, finder, victims, store, tracker, tlb_, map_, make_config(w, c), hop_sink{&hops_}) {
        mode_ = w.five_level ? x86_64::paging_mode::five_level : x86_64::paging_mode::four_level;
    }

    replay_result run(lab_stub& stub) {
        auto id = manager_.add_guest_space(guest_);
        if (!id) {
            fail("add_guest_space", id.error_code());
            return std::move(result_);
        }
        id_ = *id;
        if (auto f = manager_.add_fixups(stub.fixups()); !f) fail("add_fixups", f.error_code());
        std::array<stub_page, max_stub_pages> pages{};
        for (std::size_t i = 0; i < stub.frames().size(); ++i) pages[i] = {stub.frames()[i], read_write};
        stub_ = {std::span<const stub_page>(pages.data(), stub.frames().size()), lab_stub::built_for};
        std::uint64_t shadow_before = 0;
        for (const guest_step& s : workload_.steps) {
            switch (s.kind) {
            case step_kind::place: place(); break;
            case step_kind::map: map(s, true); break;
            case step_kind::ensure: map(s, false); break;
            case step_kind::unmap: unmap(s.start, s.end); break;
            case step_kind::access: access(s.start, s.count); break;
            case step_kind::tick: {
                tick();
                const std::uint64_t shadow = shadow_accesses();
                result_.shadow_per_tick.push_back(static_cast<std::uint32_t>(shadow - shadow_before));
                shadow_before = shadow;
                break;
            }
            }
        }
        result_.stats = manager_.stats();
        if (auto p = manager_.placement()) {
            result_.final_placement = *p;
            result_.fixups_consistent = stub.consistent_at(p->start());
        }
        result_.hops_to_settle = hops_.settled ? hops_.hops_at_last_settle : hops_.hops;
        result_.settled = hops_.settled;
        // Leave the guest space as the guest had it, so its tables can be torn down normally.
        (void)manager_.remove_guest_space(id_);
        return std::move(result_);
    }

private:
    static manager_config make_config(const guest_workload& w, const replay_config& c) {
        manager_config m;
        m.window = window_of(w, c);
        m.hop_period = c.hop_period;
        m.settle_periods = c.settle_periods;
        return m;
    }

    static bool folds(const guest_workload& w, const replay_config& c) {
        return c.window != 0 && c.window - 1 < w.space_last - w.space_first;
    }
    static virt_range window_of(const guest_workload& w, const replay_config& c) {
        if (folds(w, c)) return virt_range::of(virt_addr{0}, c.window);
        return virt_range::from_bounds(virt_addr{w.space_first}, virt_addr{w.space_last});
    }

    std::uint64_t shadow_accesses() const noexcept {
        const statistics s = manager_.stats();
        return s.shadow_reads + s.shadow_writes;
    }

    void fail(const char* what, error e, std::uint64_t at = 0) {
        ++result_.failures;
        if (result_.failure_samples.size() < 5)
            result_.failure_samples.push_back(std::string(what) + " " + hex(at) + ": " + to_string(e));
    }

    // The pieces [start, end) becomes in the replayed space.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> fold(std::uint64_t start, std::uint64_t end) const {
        if (!folds(workload_, config_)) return {{start, end}};
        const std::uint64_t w = config_.window;
        if (end - start >= w) return {{0, w}};
        const std::uint64_t s = start % w, e = s + (end - start);
        if (e <= w) return {{s, e}};
        return {{s, w}, {0, e - w}};
    }

    void place() {
        auto r = manager_.place(stub_);
        if (!r) {
            fail("place", r.error_code());
            return;
        }
        result_.placed = true;
        result_.first_placement_victim = r->kind == relocation_kind::victim;
        if (auto at = manager_.placement()) result_.first_placement = *at;
    }

    // Maps [s, e) of the guest (one folded piece): guest frames come from the
    // alias area, cut where it wraps.
    void guest_map_piece(std::uint64_t s, std::uint64_t e, const guest_step& step) {
        const attributes attrs{.writable = step.writable, .user = true, .executable = step.executable};
        std::uint64_t at = s;
        while (at < e) {
            const std::uint64_t n = std::min(e - at, memory_.guest_run(at));
            ++result_.mapping_calls;
            if (auto r = manager_.guest_map(id_, virt_range::of(virt_addr{at}, n), memory_.guest_frame(at), attrs,
                                            page_size::size_4k);
                !r)
                fail("guest_map", r.error_code(), at);
            else
                view_add(at, at + n);  // the guest has only what the manager let it map
            at += n;
        }
    }

    void map(const guest_step& step, bool replace) {
        for (auto [s, e] : fold(step.start, step.end)) {
            if (replace) {
                unmap_piece(s, e);
                guest_map_piece(s, e, step);
                continue;
            }
            // Only the holes of [s, e) in what the guest has.
            std::uint64_t cursor = s;
            for (auto [vs, ve] : view_overlaps(s, e)) {
                if (vs > cursor) guest_map_piece(cursor, vs, step);
                cursor = std::max(cursor, ve);
            }
            if (cursor < e) guest_map_piece(cursor, e, step);
        }
    }

    void unmap(std::uint64_t start, std::uint64_t end) {
        for (auto [s, e] : fold(start, end)) unmap_piece(s, e);
    }

    void unmap_piece(std::uint64_t s, std::uint64_t e) {
        for (auto [vs, ve] : view_overlaps(s, e)) {
            // One call per side of the placement: an unmap around the stub
            // journals the first side's leaves, which a large range overflows.
            for (auto [ps, pe] : split_at_placement(vs, ve)) {
                ++result_.mapping_calls;
                if (auto r = manager_.guest_unmap(id_, virt_range::of(virt_addr{ps}, pe - ps)); !r)
                    fail("guest_unmap", r.error_code(), ps);
                else
                    view_remove(ps, pe);
            }
        }
    }

    std::vector<std::pair<std::uint64_t, std::uint64_t>> split_at_placement(std::uint64_t s, std::uint64_t e) const {
        auto p = manager_.placement();
        if (!p || p->start().value() >= e || p->last().value() < s) return {{s, e}};
        const std::uint64_t ps = std::max(s, p->start().value()), pe = std::min(e, p->last().value() + 1);
        std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
        if (s < ps) out.push_back({s, ps});
        out.push_back({ps, pe});
        if (pe < e) out.push_back({pe, e});
        return out;
    }

    // `count` reads of page va by the guest at CPL 3. The first one walks the
    // tables; if it faults on the stub, every access traps: a displaced page
    // is emulated from the shadow store, a conflict moves the stub and the
    // rest of the accesses run natively.
    void access(std::uint64_t page, std::uint32_t count) {
        const std::uint64_t va = fold(page, page + page_bytes).front().first;
        result_.accesses += count;
        if (!view_contains(va)) {
            guest_step s{step_kind::ensure, true};
            guest_map_piece(va, va + page_bytes, s);
            if (!view_contains(va)) return;  // the guest could not map it (counted as a failure)
        }
        std::uint32_t left = count;
        while (left > 0) {
            const walk_outcome o = cpu_access(map_, guest_.root(), mode_, va, false);
            if (o == walk_outcome::ok) {
                result_.native_accesses += left;
                return;
            }
            auto action = manager_.handle_fault(id_, virt_addr{va}, access_kind::read);
            --left;
            if (!action) {
                fail("handle_fault", action.error_code(), va);
                return;
            }
            if (*action == fault_action::emulate) {
                std::array<std::byte, 8> data{};
                if (auto r = manager_.access_displaced(id_, virt_addr{va}, data, access_kind::read); !r)
                    fail("access_displaced", r.error_code(), va);
            } else if (*action == fault_action::reflect) {
                return;  // counted by the manager (stats.reflected)
            }
        }
    }

    void tick() {
        ++result_.ticks;
        // The accessed-bit tracker harvests once per hop period, right before
        // the judgement, a bounded slice of the guest's mappings, when victims matter.
        if constexpr (sampling_hotness_tracker<Tracker, space>) {
            if (config_.hop_period != 0 && (manager_.stats().ticks + 1) % config_.hop_period == 0) harvest();
        }
        if (auto r = manager_.tick(); !r) fail("tick", r.error_code());
    }

    // Hotness of guest pages matters only when the next move needs a victim;
    // while the window still has a free range for the stub, harvesting is skipped.
    bool free_range_left() const {
        const std::array<const space*, 2> spaces{&monitor_, &guest_};
        const region_request request{.size = config_.stub_pages * page_bytes, .window = manager_.config().window};
        return finder_.find_free(std::span<const space* const>(spaces), request).has_value();
    }

    // Round robin over what the guest has mapped, at most harvest_budget
    // pages a period (as incremental idle-page scanners do): a whole-window
    // harvest of a crowded 1 GiB window every period would cost more than
    // everything it could save.
    void harvest() {
        if (view_.empty() || free_range_left()) return;
        auto it = view_.upper_bound(harvest_cursor_);
        if (it != view_.begin() && std::prev(it)->second > harvest_cursor_) --it;
        if (it == view_.end()) {
            it = view_.begin();
            harvest_cursor_ = it->first;
        }
        const std::uint64_t first = std::max(harvest_cursor_, it->first);
        std::uint64_t end = first, budget = harvest_budget;
        while (it != view_.end() && budget > 0) {
            const std::uint64_t s = std::max(harvest_cursor_, it->first);
            std::uint64_t e = it->second;
            if ((e - s) / page_bytes > budget) e = s + budget * page_bytes;
            budget -= (e - s) / page_bytes;
            end = e;
            if (e < it->second) break;
            ++it;
        }
        harvest_cursor_ = end;
        result_.sampled_pages += harvest_budget - budget;
        const auto slice = virt_range::from_bounds(virt_addr{first}, virt_addr{end - 1});
        for (const virt_range& half : canonical_parts(slice)) {
            auto f = tracker_.sample(guest_, half);
            if (!f) fail("sample", f.error_code(), half.start().value());
            else f->ignore();  // no TLB in the lab: the next walk reads the entries
        }
    }

    // The parts of `window` in the lower and the upper canonical half (a
    // harvest may not cross the non-canonical hole).
    std::vector<virt_range> canonical_parts(const virt_range& window) const {
        const unsigned width = x86_64::width(mode_);
        const std::uint64_t low_last = (std::uint64_t{1} << (width - 1)) - 1, high_first = ~low_last;
        std::vector<virt_range> out;
        if (window.start().value() <= low_last)
            out.push_back(virt_range::from_bounds(window.start(), virt_addr{std::min(window.last().value(), low_last)}));
        if (window.last().value() >= high_first)
            out.push_back(virt_range::from_bounds(virt_addr{std::max(window.start().value(), high_first)}, window.last()));
        return out;
    }

    // What the guest has mapped, as it sees it (displaced pages included).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> view_overlaps(std::uint64_t s, std::uint64_t e) const {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
        auto it = view_.upper_bound(s);
        if (it != view_.begin()) --it;
        for (; it != view_.end() && it->first < e; ++it) {
            if (it->second <= s) continue;
            out.push_back({std::max(it->first, s), std::min(it->second, e)});
        }
        return out;
    }
    bool view_contains(std::uint64_t va) const {
        auto it = view_.upper_bound(va);
        if (it == view_.begin()) return false;
        --it;
        return va < it->second;
    }
    void view_add(std::uint64_t s, std::uint64_t e) {
        view_remove(s, e);
        view_[s] = e;
        view_pages_ += (e - s) / page_bytes;
    }
    void view_remove(std::uint64_t s, std::uint64_t e) {
        auto it = view_.upper_bound(s);
        if (it != view_.begin()) --it;
        while (it != view_.end() && it->first < e) {
            const std::uint64_t vs = it->first, ve = it->second;
            if (ve <= s) {
                ++it;
                continue;
            }
            it = view_.erase(it);
            view_pages_ -= (ve - vs) / page_bytes;
            if (vs < s) {
                view_[vs] = s;
                view_pages_ += (s - vs) / page_bytes;
            }
            if (ve > e) {
                view_[e] = ve;
                view_pages_ += (ve - e) / page_bytes;
                break;
            }
        }
    }

    host_memory& memory_;
    offset_phys_map map_;
    const guest_workload& workload_;
    replay_config config_;
    space& monitor_;
    space& guest_;
    const Finder& finder_;
    Tracker& tracker_;
    no_tlb tlb_;
    hop_log hops_;
    manager manager_;
    x86_64::paging_mode mode_ = x86_64::paging_mode::four_level;
    space_id id_ = 0;
    stub_description stub_{};
    std::map<std::uint64_t, std::uint64_t> view_;
    std::uint64_t harvest_cursor_ = 0;
    std::uint64_t view_pages_ = 0;
    replay_result result_;
};

// Builds the spaces, the policies and the manager for one combination, and replays.
template <class Finder, class Tracker>
replay_result replay_with(host_memory& memory, const guest_workload& w, const replay_config& c, victim_kind v) {
    const auto mode = w.five_level ? x86_64::paging_mode::five_level : x86_64::paging_mode::four_level;
    const offset_phys_map map = memory.map();
    auto monitor = space::create(memory, map, mode);
    auto guest = space::create(memory, map, mode);
    replay_result failed;
    if (!monitor || !guest) {
        failed.failures = 1;
        failed.failure_samples.push_back("out of frames for the spaces");
        return failed;
    }
    lab_stub stub(memory, c.stub_pages, mode);
    if (!stub.complete()) {
        failed.failures = 1;
        failed.failure_samples.push_back("no frames for the stub (or fewer than 4 stub pages)");
        return failed;
    }
    // Room for two placements' worth: a move from one victim to another
    // displaces the new pages before it restores the old ones (all or nothing).
    std::vector<page_slot> slots(2 * c.stub_pages);
    std::vector<shadow_entry> index(2 * c.stub_pages);
    pool_shadow_store store(slots, index);
    // Slots as large as the stub (rounded up to a power of two): the question
    // a tracker answers is "is this placement-sized range hot?".
    std::uint64_t granule = page_bytes;
    while (granule < c.stub_pages * page_bytes) granule <<= 1;
    Tracker tracker(hotness_config{.granularity = granule});
    pcg32 gen(c.seed);
    const Finder finder{};
    replay_result r;
    if (v == victim_kind::random_victim) {
        random_victim<pcg32> victims(gen);
        guest_replay<Finder, random_victim<pcg32>, Tracker> replay(memory, w, c, *monitor, *guest, finder, victims,
                                                                   store, tracker);
        r = replay.run(stub);
    } else {
        coldest_victim<pcg32, Tracker> victims(gen, tracker);
        guest_replay<Finder, coldest_victim<pcg32, Tracker>, Tracker> replay(memory, w, c, *monitor, *guest, finder,
                                                                             victims, store, tracker);
        r = replay.run(stub);
    }
    return r;
}

template <class Finder>
replay_result replay_tracker(host_memory& memory, const guest_workload& w, const replay_config& c, policy_combo p) {
    if (p.tracker == tracker_kind::trap_count)
        return replay_with<Finder, trap_count_tracker<>>(memory, w, c, p.victims);
    return replay_with<Finder, accessed_bit_tracker<>>(memory, w, c, p.victims);
}

}  // namespace replay_detail

// Replays guest `w` with policies `p`. Deterministic for a given seed.
inline replay_result replay(host_memory& memory, const guest_workload& w, const replay_config& c, policy_combo p) {
    using namespace replay_detail;
    switch (p.finder) {
    case finder_kind::bottom_up: return replay_tracker<bottom_up_finder>(memory, w, c, p);
    case finder_kind::top_down: return replay_tracker<top_down_finder>(memory, w, c, p);
    case finder_kind::best_fit: return replay_tracker<best_fit_finder>(memory, w, c, p);
    }
    return {};
}

}  // namespace asreloc::lab
