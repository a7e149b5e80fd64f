// The manager against a model of guest memory: random guest maps and unmaps,
// reads and writes (run as the CPU would: direct where the guest space maps
// the page for the user, else a fault handled by the manager and, when it
// says so, the emulator), and timer ticks, on two guest spaces, over both
// backends and over x86-64 spaces with their free space indexed. After every
// step: the stub sits at the placement in every space and nowhere else,
// never user-accessible; every guest page is either mapped to its own frame
// or displaced under the stub; and every read returns what the guest last
// wrote there. Periodically the content of every page is
// compared with the model. One step in 14 is a move with a failure injected
// at a random frame allocation, shadow-store insert or fixup: when it fails,
// the full-state snapshot must be unchanged.
//
// Steps per backend: ASRELOC_STEPS (default 20,000); seed: ASRELOC_SEED.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <random>
#include <vector>

#include "indexed_backend.hpp"
#include "support/seed.hpp"
#include "world.hpp"

using namespace asreloc;
using namespace asreloc::test;

namespace {

constexpr std::uint64_t region_pages = 64;  // where the guests act
constexpr std::uint64_t window_pages = 48;  // where the stub may go (inside the region)
constexpr std::uint32_t guests = 2;

std::uint64_t steps_per_backend() {
    if (const char* s = std::getenv("ASRELOC_STEPS")) return std::strtoull(s, nullptr, 0);
    return 20'000;
}

struct model_page {
    phys_addr frame;
    bool writable = true;
    std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(page_bytes);
};

template <class Backend>
class property_run {
public:
    explicit property_run(std::uint64_t seed) : rng_(seed), w_(options(seed)) {
        for (std::uint32_t i = 0; i < guests; ++i) REQUIRE(w_.add_guest() == i);
        w_.note_pages(window_base, region_pages);
        REQUIRE(w_.place().has_value());
    }

    void step(std::uint64_t n) {
        const auto op = below(100);
        if (op < 20) map_some();
        else if (op < 35) unmap_some();
        else if (op < 78) access_some();
        else if (op < 85) hammer_placement();
        else if (op < 93) tick();
        else faulty_move();
        check_mappings();
        if (n % 256 == 0) check_content();
    }

    void finish() {
        check_content();
        const auto s = w_.manager().stats();
        CAPTURE(s.conflicts, s.free_relocations, s.victim_relocations, s.hops, s.shadow_reads, s.shadow_writes);
        // The run exercised every path it is meant to.
        CHECK(s.conflicts > 0);
        CHECK(s.victim_relocations > 0);
        CHECK(s.free_relocations > 0);
        CHECK(s.hops > 0);
        CHECK(s.shadow_reads > 0);
        CHECK(s.shadow_writes > 0);
        CHECK(s.pages_restored > 0);
        CHECK(s.rollbacks == rollbacks_);
        CHECK(rollbacks_ > 0);
    }

private:
    static world_options options(std::uint64_t seed) {
        world_options o;
        o.rng_seed = seed;
        o.config.window = virt_range::of(virt_addr{window_base}, window_pages * page_bytes);
        o.config.hop_period = 8;
        return o;
    }

    std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>{0, n - 1}(rng_); }
    std::uint64_t page_at(std::uint64_t i) const { return window_base + i * page_bytes; }
    model_page* owned(std::uint32_t g, std::uint64_t page) {
        auto it = model_.find({g, page});
        return it == model_.end() ? nullptr : &it->second;
    }

    // ---- steps ---------------------------------------------------------------
    void map_some() {
        const std::uint32_t g = static_cast<std::uint32_t>(below(guests));
        const std::uint64_t first = below(region_pages);
        const std::uint64_t count = 1 + below(std::min<std::uint64_t>(4, region_pages - first));
        bool any_owned = false;
        for (std::uint64_t i = 0; i < count; ++i) any_owned |= owned(g, page_at(first + i)) != nullptr;
        if (any_owned) {
            // Never replaces a guest page, mapped or displaced (the full
            // snapshot comparison is costly: one refusal in 16 gets it).
            const bool compare = below(16) == 0;
            const auto before = compare ? w_.take() : typename world<Backend>::snapshot{};
            auto r = w_.manager().guest_map(g, virt_range::of(virt_addr{page_at(first)}, count * page_bytes),
                                            phys_addr{0x1000}, user_read_write, page_size::size_4k);
            REQUIRE(failed_with(r, error::overlaps));
            if (compare) REQUIRE(w_.take() == before);
            return;
        }
        for (std::uint64_t i = 0; i < count; ++i) {
            model_page p;
            p.writable = below(8) != 0;
            for (auto& b : p.bytes) b = static_cast<std::uint8_t>(rng_());
            auto f = w_.memory().frames().allocate_frame();
            REQUIRE(f.has_value());
            p.frame = *f;
            std::memcpy(w_.memory().to_virt(p.frame), p.bytes.data(), page_bytes);
            const attributes a{.writable = p.writable, .user = true};
            auto r = w_.manager().guest_map(g, virt_range::of(virt_addr{page_at(first + i)}, page_bytes), p.frame, a,
                                            page_size::size_4k);
            REQUIRE(r.has_value());
            model_.emplace(std::pair{g, page_at(first + i)}, std::move(p));
        }
    }

    void unmap_some() {
        const std::uint32_t g = static_cast<std::uint32_t>(below(guests));
        const std::uint64_t first = below(region_pages);
        std::uint64_t count = 1 + below(std::min<std::uint64_t>(6, region_pages - first));
        bool all_owned = true;
        for (std::uint64_t i = 0; i < count; ++i) all_owned &= owned(g, page_at(first + i)) != nullptr;
        const auto range = virt_range::of(virt_addr{page_at(first)}, count * page_bytes);
        if (!all_owned) {
            const bool compare = below(16) == 0;
            const auto before = compare ? w_.take() : typename world<Backend>::snapshot{};
            REQUIRE(failed_with(w_.manager().guest_unmap(g, range), error::not_mapped));
            if (compare) REQUIRE(w_.take() == before);
            return;
        }
        REQUIRE(w_.manager().guest_unmap(g, range).has_value());
        for (std::uint64_t i = 0; i < count; ++i) {
            auto it = model_.find({g, page_at(first + i)});
            // The frame holds the guest's last content, whether it was displaced or not.
            REQUIRE(std::memcmp(w_.memory().to_virt(it->second.frame), it->second.bytes.data(), page_bytes) == 0);
            w_.memory().frames().deallocate_frame(it->second.frame);
            model_.erase(it);
        }
    }

    void access_some() {
        const std::uint32_t g = static_cast<std::uint32_t>(below(guests));
        const std::uint64_t len = 1 + below(below(4) == 0 ? 64 : 8);
        const std::uint64_t va = window_base + below(region_pages * page_bytes - len);
        const bool write = below(2) == 0;
        std::vector<std::byte> data(len);
        for (auto& b : data) b = std::byte(static_cast<std::uint8_t>(rng_()));
        const bool ok = guest_access(g, va, data, write);
        bool expected = true;
        for (std::uint64_t i = 0; i < len; ++i) {
            const model_page* p = owned(g, (va + i) & ~(page_bytes - 1));
            if (p == nullptr || (write && !p->writable)) expected = false;
        }
        INFO("access " << (write ? "write" : "read") << " of " << len << " at " << std::hex << va);
        REQUIRE(ok == expected);
        if (!ok) return;
        for (std::uint64_t i = 0; i < len; ++i) {
            model_page* p = owned(g, (va + i) & ~(page_bytes - 1));
            const std::uint64_t off = (va + i) & (page_bytes - 1);
            if (write) p->bytes[off] = static_cast<std::uint8_t>(data[i]);
            else if (static_cast<std::uint8_t>(data[i]) != p->bytes[off]) FAIL("read byte " << i << " differs");
        }
    }

    // The guest runs into the stub's range again and again: heat for the hop
    // logic, and conflicts or emulated reads.
    void hammer_placement() {
        const std::uint32_t g = static_cast<std::uint32_t>(below(guests));
        const std::uint64_t n = 1 + below(12);
        for (std::uint64_t i = 0; i < n; ++i) {
            const virt_range p = *w_.manager().placement();
            std::byte b{};
            const std::uint64_t va = p.start().value() + below(p.size());
            const bool ok = guest_access(g, va, std::span<std::byte>{&b, 1}, false);
            const model_page* mp = owned(g, va & ~(page_bytes - 1));
            REQUIRE(ok == (mp != nullptr));
            if (ok) REQUIRE(static_cast<std::uint8_t>(b) == mp->bytes[va & (page_bytes - 1)]);
        }
    }

    // A move (a conflict, a hop, or a conflicting guest mapping) with one
    // failure injected at a random point: a frame allocation, a shadow-store
    // insert or a fixup. If the operation fails, the whole state is as
    // before; if the injected failure was never reached, it succeeded.
    void faulty_move() {
        const auto kind = below(3);
        const long k = static_cast<long>(below(6));
        std::size_t fixup = 0;
        auto arm = [&] {
            if (kind == 0) w_.allocator().fail_at(k);
            else if (kind == 1) w_.store().fail_at(k);
            else w_.fixups()[fixup = below(w_.fixups().size())].refuse_next = true;
        };
        auto disarm = [&] {
            w_.allocator().never_fail();
            w_.store().fail_at(-1);
            for (auto& f : w_.fixups()) f.refuse_next = false;
        };
        const error injected = kind == 0 ? error::out_of_frames
                               : kind == 1 ? error::shadow_store_full
                                           : error::fixup_refused;
        typename world<Backend>::snapshot before;
        auto& m = w_.manager();
        const std::uint32_t g = static_cast<std::uint32_t>(below(guests));
        const virt_range p = *m.placement();
        const auto which = below(3);
        status outcome{};
        if (which == 0) {
            // The guest touches a stub page: resolve the conflict.
            before = w_.take();
            arm();
            auto r = m.resolve_conflict(g, virt_range::of(p.start() + below(p.size() / page_bytes) * page_bytes,
                                                          page_bytes));
            if (!r) outcome = failure(r.error_code());
        } else if (which == 1) {
            // A hop, forced: the placement is made hot, the period ends.
            for (int i = 0; i < 16; ++i) w_.tracker().record_access(p.start(), 1);
            while ((m.stats().ticks + 1) % 8 != 0) REQUIRE(m.tick().has_value());
            before = w_.take();
            arm();
            auto r = m.tick();
            if (!r) outcome = failure(r.error_code());
            before.stats.ticks += 1;  // a tick is counted, failed or not
        } else {
            // The guest maps a free page of the placement (never out of frames
            // here: an allocation failure after the move would leave the move).
            std::uint64_t free_page = 0;
            for (std::uint64_t a = p.start().value(); a < p.end().value(); a += page_bytes)
                if (owned(g, a) == nullptr) free_page = a;
            if (free_page == 0 || kind == 0) {
                disarm();
                return;
            }
            auto f = w_.memory().frames().allocate_frame();
            REQUIRE(f.has_value());
            const auto with_frame = w_.take();
            arm();
            model_page page;
            page.frame = *f;
            std::memcpy(w_.memory().to_virt(page.frame), page.bytes.data(), page_bytes);
            auto r = m.guest_map(g, virt_range::of(virt_addr{free_page}, page_bytes), page.frame, user_read_write,
                                 page_size::size_4k);
            disarm();
            if (!r) {
                REQUIRE(r.error_code() == injected);
                REQUIRE(w_.take() == with_frame);
                w_.memory().frames().deallocate_frame(page.frame);
                ++rollbacks_;
            } else {
                model_.emplace(std::pair{g, free_page}, std::move(page));
            }
            return;
        }
        disarm();
        if (!outcome) {
            INFO("injected " << to_string(injected) << " at " << k << ", got " << to_string(outcome.error_code()));
            REQUIRE(outcome.error_code() == injected);
            REQUIRE(w_.take() == before);
            ++rollbacks_;
        }
    }

    void tick() {
        const std::uint64_t n = 1 + below(8);
        for (std::uint64_t i = 0; i < n; ++i) {
            auto r = w_.manager().tick();
            REQUIRE(r.has_value());
        }
    }

    // What the CPU and the monitor do together for a guest access: direct
    // where every byte is user-mapped with the right rights, else the
    // manager's fault handling. False when the guest gets a #PF.
    bool guest_access(std::uint32_t g, std::uint64_t va, std::span<std::byte> data, bool write) {
        auto& m = w_.manager();
        const access_kind kind = write ? access_kind::write : access_kind::read;
        for (int attempt = 0; attempt < 4; ++attempt) {
            std::uint64_t faulting = 0;
            bool direct = true;
            for (std::uint64_t i = 0; i < data.size() && direct; ++i) {
                auto t = w_.guest(g).translate(virt_addr{va + i});
                if (!t || !t->page.attrs.user || (write && !t->page.attrs.writable)) {
                    direct = false;
                    faulting = va + i;
                }
            }
            if (direct) {
                for (std::uint64_t i = 0; i < data.size(); ++i) {
                    std::byte* p = w_.memory().to_virt(w_.guest(g).translate(virt_addr{va + i})->phys);
                    if (write) *p = data[i];
                    else data[i] = *p;
                }
                return true;
            }
            auto action = m.handle_fault(g, virt_addr{faulting}, kind);
            REQUIRE(action.has_value());
            switch (*action) {
            case fault_action::reflect: return false;
            case fault_action::emulate: {
                auto r = m.access_displaced(g, virt_addr{va}, data, kind);
                if (!r) REQUIRE((r.error_code() == error::not_mapped || r.error_code() == error::write_protected));
                return r.has_value();
            }
            case fault_action::retry: break;
            }
        }
        FAIL("a guest access kept faulting");
        return false;
    }

    // ---- invariants ---------------------------------------------------------------
    // One REQUIRE per check: Catch's per-assertion cost would dominate the run.
    void check_mappings() {
        const std::string broken = w_.stub_invariant();
        INFO(broken);
        REQUIRE(broken.empty());
        const std::string problem = mapping_problem();
        INFO(problem);
        REQUIRE(problem.empty());
    }

    std::string mapping_problem() {
        const virt_range p = *w_.manager().placement();
        std::size_t displaced = 0;
        std::size_t outside[guests] = {};
        for (const auto& [key, page] : model_) {
            // Every guest page: mapped to its frame for the user, or displaced under the stub.
            const auto [g, at] = key;
            const virt_addr va{at};
            const auto where = [&, g = g, at = at] { return "space " + std::to_string(g) + " page " + std::to_string(at) + ": "; };
            if (p.contains(va)) {
                ++displaced;
                const mapping* o = w_.pool_store().original(shadow_key{g, va});
                if (o == nullptr || !w_.manager().is_displaced(g, va)) return where() + "not displaced under the stub";
                if (o->phys != page.frame) return where() + "displaced with the wrong frame";
            } else {
                ++outside[g];
                auto t = w_.guest(g).translate(va);
                if (!t) return where() + "lost";
                if (t->phys != page.frame || !t->page.attrs.user || t->page.attrs.writable != page.writable)
                    return where() + "mapped wrong";
            }
        }
        // And nothing else: no stray guest mapping, no stray shadow page.
        for (std::uint32_t g = 0; g < guests; ++g) {
            std::size_t mapped = 0;
            auto walked = w_.guest(g).for_each_mapping(virt_range::everything(), walk_order::bottom_up,
                                                       [&](const mapping& m) {
                                                           if (!p.contains(m.range())) ++mapped;
                                                           return walk_control::proceed;
                                                       });
            if (!walked || mapped != outside[g]) return "space " + std::to_string(g) + ": stray guest mappings";
        }
        if (w_.pool_store().size() != displaced) return "stray shadow pages";
        return "";
    }

    void check_content() {
        std::vector<std::uint8_t> seen(page_bytes);
        for (const auto& [key, page] : model_) {
            const virt_addr va{key.second};
            if (w_.manager().is_displaced(key.first, va)) {
                REQUIRE(w_.pool_store()
                            .read(shadow_key{key.first, va}, 0, std::as_writable_bytes(std::span{seen}))
                            .has_value());
            } else {
                std::memcpy(seen.data(), w_.memory().to_virt(page.frame), page_bytes);
            }
            if (seen != page.bytes) FAIL("space " << key.first << " page " << std::hex << key.second << " differs");
        }
    }

    std::uint64_t rollbacks_ = 0;
    std::mt19937_64 rng_;
    world<Backend> w_;
    std::map<std::pair<std::uint32_t, std::uint64_t>, model_page> model_;
};

}  // namespace

TEMPLATE_TEST_CASE("random guest maps, unmaps, accesses and ticks keep the stub in place and the guest's memory intact",
                   "[property]", x86_backend, reference_backend, indexed_x86_backend) {
    const std::uint64_t seed = test_seed();
    const std::uint64_t steps = steps_per_backend();
    INFO("seed " << seed << " (replay with ASRELOC_SEED=" << seed << "), steps " << steps);
    property_run<TestType> run(seed);
    for (std::uint64_t n = 1; n <= steps; ++n) {
        CAPTURE(n);
        run.step(n);
    }
    run.finish();
}
