#include <catch2/catch.hpp>

#include "lab/guest_workload.hpp"
#include "lab/replay.hpp"
#include "lab/report.hpp"

using namespace asreloc;
using namespace asreloc::lab;

namespace {

guest_step map_step(std::uint64_t start, std::uint64_t end) { return {step_kind::map, true, false, 0, start, end}; }
guest_step access_step(std::uint64_t page, std::uint32_t count) {
    return {step_kind::access, false, false, count, page, page + 0x1000};
}

// A 64-bit guest folded into a 64 KiB window (16 pages, 0x0-0xffff), the
// smallest real stub: 4 pages (IDT, GDT/TSS, entry code, data; 16 KiB):
//   place               -> the window is empty: the stub takes a free range
//   map 0x4000-0xbfff   -> (bottom-up: stub at 0x0-0x3fff, no conflict)
//   map 0x0-0x3fff      -> conflict: the stub moves to the only free range, 0xc000
//   map 0xc000-0xffff   -> conflict, nothing free: a victim, 4 pages among
//                          0x0-0xbfff, is displaced (4 pages copied)
//   5 reads of each of the 12 pages 0x0-0xb000
//                       -> 40 native, 20 on the 4 displaced pages: trapped
//                          and served from the shadow store
//   unmap 0x0-0xffff    -> the displaced pages go back (4 pages copied)
guest_workload tiny_guest() {
    guest_workload w;
    w.name = "tiny";
    w.kind = guest_kind::events;
    w.space_last = user_half_last_64;
    w.steps = {{step_kind::place}, map_step(0x4000, 0xc000), map_step(0x0, 0x4000), map_step(0xc000, 0x10000)};
    for (std::uint64_t page = 0; page < 0xc000; page += 0x1000) w.steps.push_back(access_step(page, 5));
    w.steps.push_back({step_kind::tick});
    w.steps.push_back({step_kind::unmap, false, false, 0, 0x0, 0x10000});
    return w;
}

replay_config tiny_config() {
    replay_config c;
    c.stub_pages = 4;
    c.window = 0x10000;
    c.hop_period = 0;  // no hops: the counts above are all there is
    return c;
}

}  // namespace

TEST_CASE("a tiny hand-worked trace replays with the counts worked out by hand (bottom-up)") {
    host_memory memory(4096);
    for (auto victims : {victim_kind::random_victim, victim_kind::coldest_victim}) {
        for (auto tracker : {tracker_kind::trap_count, tracker_kind::accessed_bit}) {
            for (std::uint64_t seed : {1u, 2u, 3u}) {
                auto c = tiny_config();
                c.seed = seed;
                const policy_combo p{finder_kind::bottom_up, victims, tracker};
                INFO(p.name() << " seed " << seed);
                const auto r = replay(memory, tiny_guest(), c, p);
                for (const auto& f : r.failure_samples) INFO(f);
                CHECK(r.failures == 0);
                CHECK(r.placed);
                CHECK_FALSE(r.first_placement_victim);
                CHECK(r.stats.placements == 1);
                CHECK(r.stats.conflicts == 2);
                CHECK(moves_of(r.stats) == 3);  // the placement, a free move, a victim move
                CHECK(r.stats.victim_relocations == 1);
                CHECK(r.stats.pages_displaced == 4);
                CHECK(r.stats.pages_restored == 4);
                CHECK(r.stats.bytes_copied == 8 * 4096);
                CHECK(r.stats.shadow_reads == 20);
                CHECK(r.stats.shadow_writes == 0);
                CHECK(r.stats.hops == 0);
                CHECK(r.accesses == 60);
                CHECK(r.native_accesses == 40);
                CHECK(r.ticks == 1);
                REQUIRE(r.shadow_per_tick.size() == 1);
                CHECK(r.shadow_per_tick[0] == 20);
                CHECK(r.fixups_consistent);  // IDT, GDT, TSS and GDTR/IDTR followed all three moves
            }
        }
    }
    CHECK(memory.frames_in_use() == 0);  // every table and stub frame came back
}

TEST_CASE("a top-down placement is missed by the first two maps of the tiny trace and conflicts once") {
    // Top-down puts the stub at 0xc000 first: the guest's first two maps miss
    // it, the third hits it with nothing free left -> one conflict, a victim.
    host_memory memory(4096);
    const auto r = replay(memory, tiny_guest(), tiny_config(),
                          {finder_kind::top_down, victim_kind::random_victim, tracker_kind::trap_count});
    CHECK(r.failures == 0);
    CHECK(r.stats.conflicts == 1);
    CHECK(moves_of(r.stats) == 2);  // the placement, a victim move
    CHECK(r.stats.victim_relocations == 1);
    CHECK(r.stats.shadow_reads == 20);
    CHECK(r.native_accesses == 40);
    CHECK(r.fixups_consistent);
}

TEST_CASE("a guest that wants the whole window leaves no victim and the replay reports it") {
    host_memory memory(4096);
    guest_workload w = tiny_guest();
    w.steps = {{step_kind::place}, map_step(0x0, 0x10000)};
    const auto r = replay(memory, w, tiny_config(), {});
    CHECK(r.failures == 1);
    REQUIRE(r.failure_samples.size() == 1);
    CHECK(r.failure_samples[0] == "guest_map 0: no_victim");
    CHECK(r.stats.conflicts == 0);
}

// A whole 64-bit guest OS space (both halves, the window's last byte is
// 2^64 - 1) with a kernel mapping in the upper half: top-down puts the stub
// in the last pages of the space, its stack tops stored as 0 (as the CPU's
// RSP wraps); a later map over its lower pages moves it below that map.
guest_workload whole_space_guest(bool five_level) {
    guest_workload w;
    w.name = five_level ? "top-5-level" : "top-4-level";
    w.kind = guest_kind::guest_os;
    w.space_last = ~std::uint64_t{0};
    w.five_level = five_level;
    w.steps = {map_step(0xffff'8000'0000'0000, 0xffff'8000'0010'0000), {step_kind::place},
               map_step(0 - 0x10000, 0 - 0x1000)};
    return w;
}

TEST_CASE("top-down places the stub at the very top of a whole 64-bit guest space and moves it away on a conflict") {
    host_memory memory(4096);
    for (bool five_level : {false, true}) {
        for (auto victims : {victim_kind::random_victim, victim_kind::coldest_victim}) {
            replay_config c = tiny_config();
            c.window = 0;  // native: the guest's whole space
            const policy_combo p{finder_kind::top_down, victims, tracker_kind::trap_count};
            INFO(p.name() << (five_level ? " 5-level" : " 4-level"));
            const auto r = replay(memory, whole_space_guest(five_level), c, p);
            for (const auto& f : r.failure_samples) INFO(f);
            CHECK(r.failures == 0);
            REQUIRE(r.first_placement.has_value());
            CHECK(r.first_placement->start().value() == std::uint64_t{0} - 0x4000);
            CHECK(r.first_placement->last().value() == ~std::uint64_t{0});
            CHECK_FALSE(r.first_placement_victim);
            CHECK(r.stats.conflicts == 1);
            CHECK(r.stats.free_relocations == 1);
            REQUIRE(r.final_placement.has_value());
            CHECK(r.final_placement->last().value() == std::uint64_t{0} - 0x10000 - 1);  // right below the guest's new map
            CHECK(r.fixups_consistent);  // IDT, GDT, TSS (RSP0 = 0 at the top) and GDTR/IDTR followed both moves
        }
    }
    CHECK(memory.frames_in_use() == 0);
}

TEST_CASE("folding maps a 64-bit address into the window modulo its size") {
    host_memory memory(4096);
    guest_workload w = tiny_guest();
    // 0x7f0000004000 folds to 0x4000 in a 64 KiB window: same counts as the tiny trace.
    for (auto& s : w.steps)
        if (s.kind != step_kind::place && s.kind != step_kind::tick) {
            s.start += 0x7f0000000000;
            s.end += 0x7f0000000000;
        }
    const auto r = replay(memory, w, tiny_config(), {});
    CHECK(r.failures == 0);
    CHECK(r.stats.conflicts == 2);
    CHECK(r.stats.victim_relocations == 1);
    CHECK(r.stats.shadow_reads == 20);
}

TEST_CASE("event traces become map, unmap and brk steps with one tick per call") {
    auto t = parse_event_trace("# t\n0 brk 10000 0\n1 brk 12800 0\n2 map 7f0000000000 1001\n3 protect 7f0000000000 1000\n"
                               "4 remap 7f0000000000 2000 3000 7f0000010000\n5 unmap 7f0000010000 3000\n6 brk 11000 0\n",
                               "t.events");
    REQUIRE(t.ok());
    const auto w = workload_from_events(t, "t.events", false);
    REQUIRE(w.steps.size() >= 1);
    CHECK(w.steps[0].kind == step_kind::place);
    std::vector<std::tuple<step_kind, std::uint64_t, std::uint64_t>> changes;
    for (const auto& s : w.steps)
        if (s.kind == step_kind::map || s.kind == step_kind::unmap) changes.emplace_back(s.kind, s.start, s.end);
    const std::vector<std::tuple<step_kind, std::uint64_t, std::uint64_t>> expected{
        {step_kind::map, 0x10000, 0x13000},                 // brk grows from the first break (page-rounded)
        {step_kind::map, 0x7f0000000000, 0x7f0000002000},   // 0x1001 bytes -> 2 pages
        {step_kind::unmap, 0x7f0000000000, 0x7f0000002000}, // remap: the old range goes
        {step_kind::map, 0x7f0000010000, 0x7f0000013000},   // and the new one comes
        {step_kind::unmap, 0x7f0000010000, 0x7f0000013000},
        {step_kind::unmap, 0x11000, 0x13000},               // brk shrinks
    };
    CHECK(changes == expected);
    CHECK(w.ticks == 6);  // every call but the protect
    CHECK(w.ignored == 1);
}

TEST_CASE("access traces map a page at its first touch and tick once per window") {
    auto t = parse_access_trace("# a\n0 108 3\n0 109 1\n2 108 4\n", "a.gz");
    REQUIRE(t.ok());
    const auto w = workload_from_accesses(t, "a.gz");
    std::vector<step_kind> kinds;
    for (const auto& s : w.steps) kinds.push_back(s.kind);
    const std::vector<step_kind> expected{step_kind::place, step_kind::ensure, step_kind::access, step_kind::ensure,
                                          step_kind::access, step_kind::tick,   step_kind::tick,   step_kind::access,
                                          step_kind::tick};
    CHECK(kinds == expected);
    CHECK(w.accesses == 8);
    CHECK(w.ticks == 3);
}
