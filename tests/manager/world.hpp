// A complete monitor for the manager tests, over either backend: simulated
// physical memory, a monitor space, guest spaces, a real x86-64 stub (IDT,
// GDT/TSS page, entry code, data) built in its frames with the built-in
// fixups plus user fixups, a pool shadow store, a trap-count tracker, a
// recording TLB and a trace ring. Every collaborator can be told to fail at
// its k-th call, and the whole state can be snapshotted and compared.
#pragma once

#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/manager/relocation_manager.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/policy/pool_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/reference/page_table.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "asreloc/x86_64/stub_layout.hpp"
#include "support/sim_memory.hpp"

namespace asreloc::test {

inline constexpr std::size_t world_frames = 8192;  // 32 MiB of simulated physical memory
using world_memory = sim_memory<world_frames>;
using world_allocator = failing_allocator<frame_pool<world_frames>>;

struct x86_backend {
    using space = x86_64::page_table<world_allocator, world_memory>;
    static constexpr const char* name = "x86-64";
    static std::unique_ptr<space> make(world_allocator& a, world_memory& m) {
        auto r = space::create(a, m, x86_64::paging_mode::four_level);
        REQUIRE(r.has_value());
        return std::make_unique<space>(std::move(r).value());
    }
};

struct reference_backend {
    using space = reference::page_table;
    static constexpr const char* name = "reference";
    static std::unique_ptr<space> make(world_allocator&, world_memory&) { return std::make_unique<space>(48); }
};

// A shadow store that fails its k-th insert (0-based) with shadow_store_full.
template <shadow_store Inner>
class failing_store {
public:
    explicit failing_store(Inner& inner) noexcept : inner_(&inner) {}
    void fail_at(long n) noexcept {
        fail_at_ = n;
        calls_ = 0;
    }
    long calls() const noexcept { return calls_; }

    status insert(shadow_key k, const mapping& m, std::span<const std::byte> c) {
        if (calls_++ == fail_at_) return failure(error::shadow_store_full);
        return inner_->insert(k, m, c);
    }
    status erase(shadow_key k) { return inner_->erase(k); }
    const mapping* original(shadow_key k) const { return inner_->original(k); }
    status read(shadow_key k, std::uint64_t o, std::span<std::byte> out) const { return inner_->read(k, o, out); }
    status write(shadow_key k, std::uint64_t o, std::span<const std::byte> in) { return inner_->write(k, o, in); }
    std::size_t size() const { return inner_->size(); }
    std::size_t capacity() const { return inner_->capacity(); }

private:
    Inner* inner_;
    long fail_at_ = -1;
    long calls_ = 0;
};

// Wraps a fixup so that the test can make its next forward call refuse; the
// reverse call of a rollback is always accepted (the fixup contract).
struct refusable_fixup {
    fixup inner{};
    bool refuse_next = false;
    long calls = 0;

    static status apply(void* c, virt_addr from, virt_addr to) noexcept {
        auto& self = *static_cast<refusable_fixup*>(c);
        ++self.calls;
        if (self.refuse_next) {
            self.refuse_next = false;
            return failure(error::fixup_refused);
        }
        return self.inner(from, to);
    }
    fixup as_fixup() noexcept { return fixup{&refusable_fixup::apply, this}; }
};

// Counts invalidations and keeps their ranges.
struct recording_tlb {
    std::vector<virt_range> ranges;
    std::uint64_t pages = 0, all = 0;
    void invalidate_page(virt_addr va) {
        ++pages;
        ranges.push_back(virt_range::of(va.align_down(page_size::size_4k), page_bytes));
    }
    void invalidate_range(virt_range r) { ranges.push_back(r); }
    void invalidate_all() { ++all; }
    bool covers(virt_range r) const {
        if (all > 0) return true;
        for (const auto& x : ranges)
            if (x.contains(r)) return true;
        return false;
    }
};

// Where the tests put things. Guests live in a 1 GiB window from 1 GiB; the
// monitor's own mapping sits in the upper half, far from it.
inline constexpr std::uint64_t window_base = 0x4000'0000;
inline constexpr std::uint64_t window_size = 0x4000'0000;
inline constexpr virt_addr monitor_code{0xffff'8000'0000'0000};
inline constexpr virt_addr stub_built_for{0xffff'ffff'c000'0000};
inline constexpr std::size_t stub_page_count = 4;  // IDT, GDT+TSS, entry code, data
inline constexpr std::uint64_t stub_bytes = stub_page_count * page_bytes;

struct world_options {
    std::size_t shadow_pages = 64;
    manager_config config{.window = virt_range::of(virt_addr{window_base}, window_size)};
    std::uint64_t rng_seed = 1;
};

// A window of `pages` pages at window_base: small windows fill up, so the
// victim paths can be forced.
inline world_options small_window(std::uint64_t pages, std::uint64_t seed = 1) {
    world_options o;
    o.config.window = virt_range::of(virt_addr{window_base}, pages * page_bytes);
    o.rng_seed = seed;
    return o;
}

template <class Backend>
class world {
public:
    using space_t = typename Backend::space;
    using store_t = failing_store<pool_shadow_store>;
    using victims_t = random_victim<pcg32>;
    using tracker_t = trap_count_tracker<64>;
    using manager_t = relocation_manager<space_t, top_down_finder, victims_t, store_t, tracker_t, recording_tlb,
                                         world_memory, ring_trace<1024>>;

    explicit world(world_options o = {})
        : slots_(o.shadow_pages), index_(o.shadow_pages), pool_store_(slots_, index_), store_(pool_store_),
          gen_(o.rng_seed), victims_(gen_) {
        // The stub's frames first, from a fresh pool: physically consecutive,
        // so the two table pages form one stub_tables object.
        for (std::size_t i = 0; i < stub_page_count; ++i) {
            auto f = memory_.frames().allocate_frame();
            REQUIRE(f.has_value());
            stub_frames_[i] = *f;
            std::memset(memory_.to_virt(*f), 0, page_bytes);
        }
        REQUIRE(stub_frames_[1] == stub_frames_[0] + page_bytes);
        tables_ = ::new (static_cast<void*>(memory_.to_virt(stub_frames_[0]))) x86_64::stub_tables{};
        build_tables();
        builtin_ = std::make_unique<x86_64::stub_fixups>(*tables_, stub_bytes);
        monitor_ = Backend::make(allocator_, memory_);
        REQUIRE(monitor_->map(virt_range::of(monitor_code, 4 * page_bytes), guest_frame(), read_write,
                              page_size::size_4k)
                    .has_value());
        manager_ = std::make_unique<manager_t>(*monitor_, top_down_finder{}, victims_, store_, tracker_, tlb_,
                                               memory_, o.config);
        // Every fixup (the five built-in x86-64 ones and a user slot) wrapped
        // so a test can make any of them refuse.
        const auto builtin = builtin_->list();
        for (std::size_t i = 0; i < builtin.size(); ++i) fixups_[i].inner = builtin[i];
        user_slot_ = stub_built_for.value() + 2 * page_bytes + 0x40;  // a pointer into the entry code
        fixups_[builtin.size()].inner = slot_fixup(&user_slot_);
        for (auto& f : fixups_) REQUIRE(manager_->add_fixup(f.as_fixup()).has_value());
    }
    world(const world&) = delete;
    world& operator=(const world&) = delete;
    ~world() {
        manager_.reset();
        guests_.clear();
    }

    manager_t& manager() { return *manager_; }
    world_memory& memory() { return memory_; }
    world_allocator& allocator() { return allocator_; }
    store_t& store() { return store_; }
    pool_shadow_store& pool_store() { return pool_store_; }
    tracker_t& tracker() { return tracker_; }
    recording_tlb& tlb() { return tlb_; }
    space_t& monitor() { return *monitor_; }
    space_t& guest(space_id id) { return *guest_by_id_.at(id); }
    x86_64::stub_tables& tables() { return *tables_; }
    std::uint64_t user_slot() const { return user_slot_; }
    std::array<refusable_fixup, 6>& fixups() { return fixups_; }
    const std::array<phys_addr, stub_page_count>& stub_frames() const { return stub_frames_; }

    std::array<stub_page, stub_page_count> stub_pages() const {
        return {stub_page{stub_frames_[0], read_write}, stub_page{stub_frames_[1], read_write},
                stub_page{stub_frames_[2], attributes{.executable = true}}, stub_page{stub_frames_[3], read_write}};
    }

    space_id add_guest() {
        guests_.push_back(Backend::make(allocator_, memory_));
        auto id = manager_->add_guest_space(*guests_.back());
        REQUIRE(id.has_value());
        if (guest_by_id_.size() <= *id) guest_by_id_.resize(*id + 1);
        guest_by_id_[*id] = guests_.back().get();
        return *id;
    }

    result<relocation_report> place() {
        const auto pages = stub_pages();
        return manager_->place(stub_description{pages, stub_built_for});
    }

    // A fresh guest frame filled with `fill` (the guest's content).
    phys_addr guest_frame(std::uint8_t fill = 0) {
        auto f = memory_.frames().allocate_frame();
        REQUIRE(f.has_value());
        std::memset(memory_.to_virt(*f), fill, page_bytes);
        return *f;
    }
    // `pages` guest pages at va in `id`, each its own frame, page i filled with fill + i.
    void guest_map(space_id id, std::uint64_t va, std::uint64_t pages, std::uint8_t fill = 0x10,
                   attributes attrs = user_read_write) {
        for (std::uint64_t i = 0; i < pages; ++i) {
            const auto frame = guest_frame(static_cast<std::uint8_t>(fill + i));
            auto r = manager_->guest_map(id, virt_range::of(virt_addr{va + i * page_bytes}, page_bytes), frame, attrs,
                                         page_size::size_4k);
            REQUIRE(r.has_value());
            note_pages(va + i * page_bytes, 1);
        }
    }
    // The byte the guest sees at va, read as the emulator would (through the
    // manager when displaced).
    std::optional<std::uint8_t> guest_byte(space_id id, std::uint64_t va) {
        std::byte b{};
        if (!manager_->access_displaced(id, virt_addr{va}, std::span<std::byte>{&b, 1}, access_kind::read))
            return std::nullopt;
        return static_cast<std::uint8_t>(b);
    }

    // ---- the whole state, for "nothing changed" checks -----------------------
    struct snapshot {
        std::vector<std::vector<mapping>> spaces;  // monitor first, then guests by id
        std::vector<std::byte> tables;             // both stub table pages
        std::uint64_t user_slot = 0;
        std::vector<std::tuple<std::uint32_t, std::uint64_t, mapping, std::vector<std::byte>>> shadow;
        std::size_t shadow_size = 0;
        statistics stats;  // rollbacks zeroed: the one counter a failure changes
        std::size_t free_frames = 0;
        std::optional<virt_range> placement;

        bool operator==(const snapshot&) const = default;
    };

    static std::vector<mapping> dump(const space_t& s) {
        std::vector<mapping> out;
        auto r = s.for_each_mapping(virt_range::everything(), walk_order::bottom_up, [&](const mapping& m) {
            out.push_back(m);
            return walk_control::proceed;
        });
        REQUIRE(r.has_value());
        return out;
    }

    // Shadow content is enumerated over the pages any space has or had mapped
    // in the window and the placements seen: the store has no iteration.
    snapshot take() {
        snapshot s;
        s.spaces.push_back(dump(*monitor_));
        for (auto* g : guest_by_id_) s.spaces.push_back(g != nullptr ? dump(*g) : std::vector<mapping>{});
        const auto* t = reinterpret_cast<const std::byte*>(tables_);
        s.tables.assign(t, t + sizeof(x86_64::stub_tables));
        s.user_slot = user_slot_;
        for (std::uint32_t id = 0; id < guest_by_id_.size(); ++id)
            for (std::uint64_t page : candidate_pages()) {
                const shadow_key k{id, virt_addr{page}};
                if (const mapping* m = pool_store_.original(k)) {
                    std::vector<std::byte> bytes(page_bytes);
                    REQUIRE(pool_store_.read(k, 0, bytes).has_value());
                    s.shadow.emplace_back(id, page, *m, std::move(bytes));
                }
            }
        s.shadow_size = pool_store_.size();
        s.stats = manager_->stats();
        s.stats.rollbacks = 0;
        s.free_frames = memory_.frames().free_count();
        if (auto p = manager_->placement()) s.placement = *p;
        return s;
    }

    // Pages worth probing for shadow entries: every page of every guest
    // mapping and of the current placement, plus those noted by the test.
    std::set<std::uint64_t> candidate_pages() {
        std::set<std::uint64_t> pages = noted_pages_;
        if (auto p = manager_->placement())
            for (std::uint64_t a = p->start().value(); a < p->start().value() + p->size(); a += page_bytes)
                pages.insert(a);
        return pages;
    }
    void note_pages(std::uint64_t va, std::uint64_t count) {
        for (std::uint64_t i = 0; i < count; ++i) noted_pages_.insert(va + i * page_bytes);
    }

    // The stub is mapped at the placement in every space, same frames,
    // supervisor-only in the guest spaces, and nowhere else; returns a
    // description of the first violation, or "".
    std::string stub_invariant() {
        auto p = manager_->placement();
        if (!p) return "not placed";
        auto check = [&](const space_t& s, const char* who) -> std::string {
            for (std::size_t i = 0; i < stub_page_count; ++i) {
                auto t = s.translate(p->start() + i * page_bytes);
                if (!t) return std::string(who) + ": stub page not mapped";
                if (t->phys != stub_frames_[i]) return std::string(who) + ": wrong stub frame";
                if (t->page.attrs.user) return std::string(who) + ": stub reachable from the guest";
            }
            for (const auto& m : dump(s)) {
                for (std::size_t i = 0; i < stub_page_count; ++i) {
                    const bool has_frame = m.phys <= stub_frames_[i] && stub_frames_[i] - m.phys < bytes(m.size);
                    if (has_frame && m.start != p->start() + i * page_bytes)
                        return std::string(who) + ": stub frame mapped outside the placement";
                }
            }
            return "";
        };
        if (auto e = check(*monitor_, "monitor"); !e.empty()) return e;
        for (auto* g : guest_by_id_)
            if (g != nullptr)
                if (auto e = check(*g, "guest"); !e.empty()) return e;
        return "";
    }

private:
    void build_tables() {
        auto& t = *tables_;
        const std::uint64_t entry = stub_built_for.value() + 2 * page_bytes;
        for (std::size_t v = 0; v < 32; ++v)
            t.idt_gates[v] = x86_64::idt_gate::make(entry + 16 * v, x86_64::kernel_code_selector,
                                                    x86_64::system_type::interrupt_gate,
                                                    x86_64::privilege_level::ring0, 0);
        t.place(stub_built_for);
        t.tss.rsp[0] = stub_built_for.value() + stub_bytes;         // top of the data page
        t.tss.ist[0] = stub_built_for.value() + stub_bytes - 2048;  // a second stack inside it
    }

    world_memory memory_;
    world_allocator allocator_{memory_.frames()};
    std::vector<page_slot> slots_;
    std::vector<shadow_entry> index_;
    pool_shadow_store pool_store_;
    store_t store_;
    pcg32 gen_;
    victims_t victims_;
    tracker_t tracker_;
    recording_tlb tlb_;
    std::array<phys_addr, stub_page_count> stub_frames_{};
    x86_64::stub_tables* tables_ = nullptr;
    std::unique_ptr<x86_64::stub_fixups> builtin_;
    std::array<refusable_fixup, 6> fixups_{};
    std::uint64_t user_slot_ = 0;
    std::unique_ptr<space_t> monitor_;
    std::vector<std::unique_ptr<space_t>> guests_;
    std::vector<space_t*> guest_by_id_;
    std::unique_ptr<manager_t> manager_;
    std::set<std::uint64_t> noted_pages_;
};

}  // namespace asreloc::test
