// The relocation manager's interface, case by case: bad input gets its precise
// error and changes nothing; guest mapping events; the emulator's access to
// displaced content; pins; precise invalidation; trace and statistics.
#include <catch2/catch.hpp>

#include <set>

#include "world.hpp"

using namespace asreloc;
using namespace asreloc::test;

TEMPLATE_TEST_CASE("place refuses a bad stub and a second placement, and changes nothing", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    (void)w.add_guest();
    const auto pages = w.stub_pages();
    const auto before = w.take();
    CHECK(failed_with(m.place(stub_description{{}, stub_built_for}), error::empty_range));
    std::array<stub_page, 1> odd{stub_page{pages[0].frame + 8, read_write}};
    CHECK(failed_with(m.place(stub_description{odd, stub_built_for}), error::misaligned));
    std::vector<stub_page> many(world<TestType>::manager_t::limits.stub_pages + 1, pages[0]);
    CHECK(failed_with(m.place(stub_description{many, stub_built_for}), error::capacity_exceeded));
    CHECK(w.take() == before);
    CHECK_FALSE(m.is_placed());
    CHECK(failed_with(m.placement(), error::not_placed));
    REQUIRE(w.place().has_value());
    const auto placed = w.take();
    CHECK(failed_with(w.place(), error::overlaps));
    CHECK(w.take() == placed);
}

TEMPLATE_TEST_CASE("every call naming an unknown guest space answers unknown_address_space", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    const space_id g = w.add_guest();
    REQUIRE(w.place().has_value());
    const space_id bad = g + 5;
    std::byte b{};
    CHECK(failed_with(m.classify(bad, virt_addr{window_base}), error::unknown_address_space));
    CHECK(failed_with(m.classify_mapping(bad, virt_range::of(virt_addr{window_base}, page_bytes)),
                      error::unknown_address_space));
    CHECK(failed_with(m.handle_fault(bad, virt_addr{window_base}, access_kind::read), error::unknown_address_space));
    CHECK(failed_with(m.guest_map(bad, virt_range::of(virt_addr{window_base}, page_bytes), w.guest_frame(),
                                  user_read_write, page_size::size_4k),
                      error::unknown_address_space));
    CHECK(failed_with(m.guest_unmap(bad, virt_range::of(virt_addr{window_base}, page_bytes)),
                      error::unknown_address_space));
    CHECK(failed_with(m.access_displaced(bad, virt_addr{window_base}, std::span{&b, 1}, access_kind::read),
                      error::unknown_address_space));
    CHECK(failed_with(m.resolve_conflict(bad, *m.placement()), error::unknown_address_space));
    CHECK(failed_with(m.remove_guest_space(bad), error::unknown_address_space));
}

TEMPLATE_TEST_CASE("a guest space cannot be registered twice, be the monitor space, or go past the capacity",
                   "[manager]", x86_backend, reference_backend) {
    world<TestType> w;
    const space_id g = w.add_guest();
    CHECK(failed_with(w.manager().add_guest_space(w.guest(g)), error::overlaps));
    CHECK(failed_with(w.manager().add_guest_space(w.monitor()), error::overlaps));
    for (std::size_t i = 1; i < world<TestType>::manager_t::limits.guest_spaces; ++i) (void)w.add_guest();
    auto extra = TestType::make(w.allocator(), w.memory());
    CHECK(failed_with(w.manager().add_guest_space(*extra), error::capacity_exceeded));
}

TEMPLATE_TEST_CASE("a guest mapping never replaces a guest page, mapped or displaced", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w(small_window(8, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 8, 0x40);  // the whole window: the stub displaces
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    const phys_addr f = w.guest_frame();
    const auto before = w.take();
    CHECK(failed_with(m.guest_map(g, virt_range::of(p.start(), page_bytes), f, user_read_write, page_size::size_4k),
                      error::overlaps));  // displaced
    const virt_addr outside = p.start().value() == window_base ? p.end() : virt_addr{window_base};
    CHECK(failed_with(m.guest_map(g, virt_range::of(outside, page_bytes), f, user_read_write, page_size::size_4k),
                      error::overlaps));  // mapped
    CHECK(failed_with(m.guest_map(g, virt_range::of(outside + 8, page_bytes), f, user_read_write, page_size::size_4k),
                      error::misaligned));
    CHECK(failed_with(m.guest_map(g, virt_range::of(virt_addr{0x0000'8000'0000'0000}, page_bytes), f,
                                  user_read_write, page_size::size_4k),
                      error::non_canonical));
    CHECK(w.take() == before);
}

TEMPLATE_TEST_CASE("a guest unmap writes displaced content back to its frame and drops it from the shadow store",
                   "[manager]", x86_backend, reference_backend) {
    world<TestType> w(small_window(8, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 8, 0x40);
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    const virt_addr va = p.start() + page_bytes;
    const phys_addr frame = w.pool_store().original(shadow_key{g, va})->phys;
    std::array<std::byte, 4> data{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
    REQUIRE(m.access_displaced(g, va + 10, data, access_kind::write).has_value());
    CHECK(*w.memory().to_virt(frame + 10) != std::byte{1});  // only the shadow copy has it so far

    // A range with a hole (a stub page without guest content after this
    // unmap) is refused whole; then the page alone goes.
    REQUIRE(m.guest_unmap(g, virt_range::of(va, page_bytes)).has_value());
    CHECK(std::memcmp(w.memory().to_virt(frame + 10), data.data(), 4) == 0);
    CHECK_FALSE(m.is_displaced(g, va));
    CHECK(w.pool_store().size() == 3);
    CHECK(*m.classify(g, va) == fault_class::conflict);
    const auto before = w.take();
    CHECK(failed_with(m.guest_unmap(g, virt_range::of(p.start(), 2 * page_bytes)), error::not_mapped));
    CHECK(failed_with(m.guest_unmap(g, virt_range::of(p.start() + 4, page_bytes)), error::misaligned));
    CHECK(w.take() == before);
    CHECK(*m.placement() == p);  // unmapping never moves the stub
}

TEMPLATE_TEST_CASE("a guest unmap around the placement takes more leaves than the undo log has entries",
                   "[manager]", x86_backend, reference_backend) {
    world<TestType> w(small_window(8, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    // 4 KiB leaves on both sides of the window the stub is placed in, more
    // on the lower side than the manager's undo log could journal one by one.
    constexpr std::uint64_t below = 96;
    constexpr std::uint64_t above = 8;
    static_assert(below > world<TestType>::manager_t::journal_capacity);
    const std::uint64_t first = window_base - below * page_bytes;
    w.guest_map(g, first, below + 8 + above, 0x20);
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    REQUIRE(w.pool_store().size() == stub_page_count);
    const auto range = virt_range::of(virt_addr{first}, (below + 8 + above) * page_bytes);
    REQUIRE(m.guest_unmap(g, range).has_value());
    CHECK(w.pool_store().size() == 0);
    CHECK_FALSE(w.guest(g).translate(range.start()).has_value());
    CHECK_FALSE(w.guest(g).translate(p.start() - page_bytes).has_value());
    CHECK_FALSE(w.guest(g).translate(p.end()).has_value());
    CHECK_FALSE(w.guest(g).translate(range.last()).has_value());
    CHECK(*m.classify(g, p.start()) == fault_class::conflict);  // the guest gave the pages up
    CHECK(*m.placement() == p);
    const std::string broken = w.stub_invariant();
    INFO(broken);
    CHECK(broken.empty());
}

TEMPLATE_TEST_CASE("the emulator's access is checked whole before any byte moves", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w(small_window(8, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    // Pages 0-5 writable, 6-7 read-only; the stub displaces four of them.
    w.guest_map(g, window_base, 6, 0x40);
    w.guest_map(g, window_base + 6 * page_bytes, 2, 0x46, attributes{.user = true});
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    const auto before = w.take();
    std::array<std::byte, 16> data{};
    data.fill(std::byte{0x77});
    // A write across the whole window reaches a read-only page somewhere.
    std::vector<std::byte> wide(8 * page_bytes - 16, std::byte{0x77});
    CHECK(failed_with(m.access_displaced(g, virt_addr{window_base + 8}, wide, access_kind::write),
                      error::write_protected));
    // Past the window nothing is mapped.
    CHECK(failed_with(m.access_displaced(g, virt_addr{window_base + 8 * page_bytes - 8}, data, access_kind::read),
                      error::not_mapped));
    CHECK(failed_with(m.access_displaced(g, virt_addr{~std::uint64_t{0} - 4}, data, access_kind::read),
                      error::out_of_bounds));
    CHECK(w.take() == before);
    // After the guest gives up a displaced page, the stub page has nothing of
    // the guest's beneath it: not_mapped (the guest would fault natively).
    REQUIRE(m.guest_unmap(g, virt_range::of(p.start(), page_bytes)).has_value());
    CHECK(failed_with(m.access_displaced(g, p.start() + 100, data, access_kind::read), error::not_mapped));
    CHECK(m.access_displaced(g, p.start() + page_bytes, std::span<std::byte>{}, access_kind::read).has_value());
}

TEMPLATE_TEST_CASE("victims never cover a pinned range", "[manager]", x86_backend, reference_backend) {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) {
        CAPTURE(seed);
        world<TestType> w(small_window(16, seed));
        auto& m = w.manager();
        const space_id g = w.add_guest();
        w.guest_map(g, window_base, 16, 0x40);
        // Pin everything but pages 4-7 (the guest's page tables, MMIO, ...).
        REQUIRE(m.pin(virt_range::of(virt_addr{window_base}, 4 * page_bytes)).has_value());
        REQUIRE(m.pin(virt_range::of(virt_addr{window_base + 8 * page_bytes}, 8 * page_bytes)).has_value());
        REQUIRE(w.place().has_value());
        CHECK(*m.placement() == virt_range::of(virt_addr{window_base + 4 * page_bytes}, stub_bytes));
        // With the placement itself excluded, no candidate is left.
        const auto before = w.take();
        CHECK(failed_with(m.resolve_conflict(g, virt_range::of(m.placement()->start(), page_bytes)), error::no_victim));
        CHECK(w.take() == before);
        CHECK(m.stats().rollbacks == 1);
        REQUIRE(m.unpin(virt_range::of(virt_addr{window_base}, 4 * page_bytes)).has_value());
        CHECK(failed_with(m.unpin(virt_range::of(virt_addr{window_base}, 4 * page_bytes)), error::not_mapped));
        REQUIRE(m.resolve_conflict(g, virt_range::of(m.placement()->start(), page_bytes)).has_value());
        CHECK(*m.placement() == virt_range::of(virt_addr{window_base}, stub_bytes));
    }
}

TEMPLATE_TEST_CASE("a victim is never taken over the monitor's own mappings", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w(small_window(32, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 32, 0x40);
    // The monitor maps the top quarter of the window itself.
    const std::uint64_t monitor_start = window_base + 24 * page_bytes;
    REQUIRE(w.monitor()
                .map(virt_range::of(virt_addr{monitor_start}, 8 * page_bytes), w.guest_frame(), read_write,
                     page_size::size_4k)
                .has_value());
    for (int i = 0; i < 20; ++i) {
        if (!m.is_placed()) REQUIRE(w.place().has_value());
        else REQUIRE(m.resolve_conflict(g, virt_range::of(m.placement()->start(), page_bytes)).has_value());
        CHECK(m.placement()->last().value() < monitor_start);
    }
    CHECK(failed_with(m.relocate_to(virt_range::of(virt_addr{monitor_start}, stub_bytes)), error::overlaps));
}

TEMPLATE_TEST_CASE("a relocation invalidates the old placement and the displaced range, nothing more", "[manager]",
                   x86_backend, reference_backend) {
    world<TestType> w(small_window(16, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 16, 0x40);
    REQUIRE(w.place().has_value());
    const virt_range old = *m.placement();
    w.tlb().ranges.clear();
    const virt_range to{virt_range::of(old.start().value() == window_base ? old.end() : virt_addr{window_base},
                                       stub_bytes)};
    REQUIRE(m.relocate_to(to).has_value());
    CHECK(w.tlb().all == 0);
    CHECK(w.tlb().covers(old));
    CHECK(w.tlb().covers(to));
    for (const virt_range& r : w.tlb().ranges) CHECK((old.contains(r) || to.contains(r)));
}

TEMPLATE_TEST_CASE("a relocation the shadow store cannot hold answers shadow_store_full and changes nothing",
                   "[manager]", x86_backend, reference_backend) {
    world_options o = small_window(16, 7);
    o.shadow_pages = 6;  // one displaced stub (4) fits, the next relocation needs 8 at once
    world<TestType> w(o);
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 16, 0x40);
    REQUIRE(w.place().has_value());
    const auto before = w.take();
    CHECK(failed_with(m.resolve_conflict(g, virt_range::of(m.placement()->start(), page_bytes)),
                      error::shadow_store_full));
    CHECK(w.take() == before);
}

TEMPLATE_TEST_CASE("faults outside the placement are reflected, and a conflict elsewhere does nothing", "[manager]",
                   x86_backend, reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    const space_id g = w.add_guest();
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    CHECK(*m.handle_fault(g, p.start() - 1, access_kind::read) == fault_action::reflect);
    CHECK(*m.handle_fault(g, p.end(), access_kind::execute) == fault_action::reflect);
    CHECK(m.stats().reflected == 2);
    auto r = m.resolve_conflict(g, virt_range::of(p.end(), page_bytes));
    REQUIRE(r.has_value());
    CHECK(r->from == r->to);
    CHECK(*m.placement() == p);
    CHECK(m.stats().conflicts == 0);
}

// The world's finder is top-down: around a conflict it must still take the
// highest free range of the window, above the conflict when there is room
// there, not the highest one below it.
TEMPLATE_TEST_CASE("a conflict moves the stub to the range its finder prefers, above the conflict or below",
                   "[manager]", x86_backend, reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    const space_id g = w.add_guest();
    REQUIRE(w.place().has_value());
    const auto top = virt_range::of(virt_addr{window_base + window_size - stub_bytes}, stub_bytes);
    REQUIRE(*m.placement() == top);
    const auto middle = virt_range::of(virt_addr{window_base + window_size / 2}, stub_bytes);
    REQUIRE(m.relocate_to(middle).has_value());
    auto r = m.resolve_conflict(g, middle);
    REQUIRE(r.has_value());
    CHECK(r->to == top);
    // With the guest on the top page, the highest free range lies below it.
    w.guest_map(g, window_base + window_size - page_bytes, 1);
    auto below = m.resolve_conflict(g, virt_range::of(top.last() - (page_bytes - 1), page_bytes));
    REQUIRE(below.has_value());
    CHECK(below->to == virt_range::of(top.start() - stub_bytes, stub_bytes));
}

TEMPLATE_TEST_CASE("relocate_to checks the target before anything moves", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    (void)w.add_guest();
    CHECK(failed_with(m.relocate_to(virt_range::of(virt_addr{window_base}, stub_bytes)), error::not_placed));
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    const auto before = w.take();
    CHECK(failed_with(m.relocate_to(virt_range::of(p.start() + page_bytes, stub_bytes)), error::overlaps));
    CHECK(failed_with(m.relocate_to(virt_range::of(virt_addr{window_base}, page_bytes)), error::overlaps));
    CHECK(failed_with(m.relocate_to(virt_range::of(virt_addr{window_base + 1}, stub_bytes)), error::misaligned));
    CHECK(failed_with(m.relocate_to(virt_range::of(virt_addr{0x0000'8000'0000'0000}, stub_bytes)),
                      error::non_canonical));
    CHECK(m.stats().rollbacks == 0);
    // The monitor's own mapping is found by the move's first step, before a
    // fixup runs or a guest page moves: one rollback, nothing else.
    const auto calls = w.fixups()[0].calls;
    CHECK(failed_with(m.relocate_to(virt_range::of(monitor_code, stub_bytes)), error::overlaps));
    CHECK(m.stats().rollbacks == 1);
    CHECK(w.fixups()[0].calls == calls);
    CHECK(w.take() == before);
}

TEMPLATE_TEST_CASE("without a hop period the stub never hops", "[manager]", x86_backend, reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    (void)w.add_guest();
    REQUIRE(w.place().has_value());
    const virt_range p = *m.placement();
    for (int i = 0; i < 100; ++i) {
        w.tracker().record_access(p.start(), 5);
        CHECK(*m.tick() == tick_outcome::waiting);
    }
    CHECK(*m.placement() == p);
    CHECK(m.stats().ticks == 100);
    CHECK(m.stats().hops == 0);
}

TEMPLATE_TEST_CASE("the trace records placement, conflicts, moves and restores in order", "[manager][trace]",
                   x86_backend, reference_backend) {
    world<TestType> w(small_window(16, 7));
    auto& m = w.manager();
    const space_id g = w.add_guest();
    w.guest_map(g, window_base, 16, 0x40);
    REQUIRE(w.place().has_value());
    const virt_range first = *m.placement();
    REQUIRE(m.handle_fault(g, first.start(), access_kind::read).has_value() == true);
    // The page was displaced: the fault is for the emulator, no move.
    CHECK(*m.placement() == first);
    REQUIRE(m.guest_unmap(g, virt_range::of(first.start(), page_bytes)).has_value());
    REQUIRE(*m.handle_fault(g, first.start(), access_kind::read) == fault_action::retry);
    const auto& t = m.trace();
    std::vector<trace_kind> kinds;
    for (std::size_t i = 0; i < t.size(); ++i) kinds.push_back(t[i].kind);
    // Each cause comes before its effects.
    const std::vector<trace_kind> expected{trace_kind::placed,   trace_kind::guest_unmapped,   trace_kind::restored,
                                           trace_kind::conflict, trace_kind::relocated_victim, trace_kind::restored};
    REQUIRE(kinds.size() == 1 + 16 + expected.size());  // space_added, the guest's 16 maps, then these
    CHECK(kinds[0] == trace_kind::space_added);
    CHECK(kinds[16] == trace_kind::guest_mapped);
    CHECK(std::vector<trace_kind>(kinds.begin() + 17, kinds.end()) == expected);
    const virt_range page = virt_range::of(first.start(), page_bytes);
    CHECK(t[t.size() - 3].from == page);   // the conflict: what the guest needed
    CHECK(t[t.size() - 3].to == first);    // where the stub was
    CHECK(t[t.size() - 2].from == first);  // the move
    CHECK(t[t.size() - 1].from == first);  // the rest of the old placement back to the guest
    CHECK(t[t.size() - 1].count == 3);
    auto last = m.last_relocation();
    REQUIRE(last.has_value());
    CHECK(last->from == first);
    CHECK(last->to == *m.placement());
    CHECK(last->kind == relocation_kind::victim);
    CHECK(last->pages_restored == 3);
}

TEMPLATE_TEST_CASE("statistics take the fast and slow trap counts from an attached router", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    trap_router router{address_space_switch{[](void*) noexcept {}, [](void*) noexcept {}, nullptr}};
    router.route_fast(3, [](void*, trap_frame&) noexcept { return trap_disposition::resume_guest; }, nullptr);
    router.route_slow(14, [](void*, trap_frame&) noexcept { return trap_disposition::resume_guest; }, nullptr);
    m.attach_router(&router);
    trap_frame f{};
    f.vector = 3;
    (void)router.dispatch(f);
    (void)router.dispatch(f);
    f.vector = 14;
    (void)router.dispatch(f);
    f.vector = 6;
    (void)router.dispatch(f);
    const auto s = m.stats();
    CHECK(s.fast_traps == 2);
    CHECK(s.slow_traps == 1);
    CHECK(s.reflected == 1);
}

#include "asreloc/hosted/heap_shadow_store.hpp"
#include "asreloc/policy/accessed_bit_tracker.hpp"
#include "asreloc/policy/best_fit_finder.hpp"
#include "asreloc/policy/coldest_victim.hpp"

TEST_CASE("the manager composes with the other policies: best fit, coldest victim, the heap store, accessed bits",
          "[manager]") {
    world_memory memory;
    world_allocator frames{memory.frames()};
    auto monitor = x86_backend::make(frames, memory);
    auto guest = x86_backend::make(frames, memory);
    hosted::heap_shadow_store store{16};
    accessed_bit_tracker<> tracker;
    pcg32 gen{42};
    coldest_victim<pcg32, accessed_bit_tracker<>> victims{gen, tracker};
    recording_tlb tlb;
    manager_config config;
    config.window = virt_range::of(virt_addr{window_base}, 12 * page_bytes);
    relocation_manager<x86_backend::space, best_fit_finder, decltype(victims), hosted::heap_shadow_store,
                       accessed_bit_tracker<>, recording_tlb, world_memory>
        m{*monitor, {}, victims, store, tracker, tlb, memory, config};
    const space_id g = *m.add_guest_space(*guest);

    // The guest owns pages 0-9 of the window; page 10-11 are free but too small for the stub.
    std::vector<phys_addr> owned;
    for (std::uint64_t i = 0; i < 10; ++i) {
        const phys_addr f = *memory.frames().allocate_frame();
        std::memset(memory.to_virt(f), static_cast<int>(0x30 + i), page_bytes);
        owned.push_back(f);
        REQUIRE(m.guest_map(g, virt_range::of(virt_addr{window_base + i * page_bytes}, page_bytes), f,
                            user_read_write, page_size::size_4k)
                    .has_value());
    }
    // The guest has touched pages 0-5 (accessed bits), the tracker samples them: the coldest victim is elsewhere.
    for (std::uint64_t i = 0; i < 6; ++i)
        REQUIRE(guest->mark_accessed(virt_addr{window_base + i * page_bytes}, false).has_value());
    for (int round = 0; round < 4; ++round)
        REQUIRE(tracker.sample(*guest, virt_range::of(virt_addr{window_base}, 12 * page_bytes)).has_value());

    std::array<phys_addr, 3> stub_frames{};
    for (auto& f : stub_frames) f = *memory.frames().allocate_frame();
    const std::array<stub_page, 3> pages{stub_page{stub_frames[0]}, stub_page{stub_frames[1]},
                                         stub_page{stub_frames[2], attributes{.executable = true}}};
    auto placed = m.place(stub_description{pages, virt_addr{0}});
    REQUIRE(placed.has_value());
    CHECK(placed->kind == relocation_kind::victim);
    const virt_range p = *m.placement();
    CHECK(p.start().value() >= window_base + 6 * page_bytes);  // never over the hot pages
    std::size_t under = 0;  // the guest's pages under the stub: displaced
    for (std::uint64_t i = 0; i < owned.size(); ++i) under += p.contains(virt_addr{window_base + i * page_bytes}) ? 1 : 0;
    CHECK(under > 0);
    CHECK(store.size() == under);
    std::byte b{};
    REQUIRE(m.access_displaced(g, p.start() + 5, std::span{&b, 1}, access_kind::read).has_value());
    CHECK(static_cast<int>(b) == static_cast<int>(0x30 + (p.start().value() - window_base) / page_bytes));
    b = std::byte{0xee};
    REQUIRE(m.access_displaced(g, p.start() + 5, std::span{&b, 1}, access_kind::write).has_value());
    const std::uint64_t index = (p.start().value() - window_base) / page_bytes;
    REQUIRE(m.relocate_to(virt_range::of(virt_addr{window_base + 64 * page_bytes}, 3 * page_bytes)).has_value());
    CHECK(store.size() == 0);
    CHECK(*memory.to_virt(owned[index] + 5) == std::byte{0xee});
    auto t = guest->translate(virt_addr{window_base + index * page_bytes});
    REQUIRE(t.has_value());
    CHECK(t->phys == owned[index]);
}

TEMPLATE_TEST_CASE("fixup and pin tables refuse past their capacity and keep what they had", "[manager]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    auto& m = w.manager();
    constexpr auto limits = world<TestType>::manager_t::limits;
    std::uint64_t slot = stub_built_for.value();
    std::vector<fixup> many(limits.fixups - w.fixups().size() + 1, slot_fixup(&slot));
    CHECK(failed_with(m.add_fixups(many), error::capacity_exceeded));  // all or nothing
    many.pop_back();
    REQUIRE(m.add_fixups(many).has_value());
    CHECK(failed_with(m.add_fixup(slot_fixup(&slot)), error::capacity_exceeded));
    (void)w.add_guest();
    REQUIRE(w.place().has_value());
    // Every registered slot fixup ran once: the slot moved by the placement's offset that many times.
    CHECK(slot == stub_built_for.value() + many.size() * (m.placement()->start().value() - stub_built_for.value()));

    for (std::size_t i = 0; i < limits.pins; ++i)
        REQUIRE(m.pin(virt_range::of(virt_addr{window_base + i * page_bytes}, page_bytes)).has_value());
    CHECK(failed_with(m.pin(virt_range::of(virt_addr{0}, page_bytes)), error::capacity_exceeded));
    CHECK(m.pins().size() == limits.pins);
}

namespace {

// A victim selector that first offers a range some space cannot map (as a
// selector unaware of an adapter's narrower canonical range would), then a
// good one.
struct scripted_victims {
    std::vector<virt_range> draws;
    std::size_t next = 0;
    template <page_table P>
    result<virt_range> select(std::span<const P* const>, const victim_request&) {
        if (next == draws.size()) return failure(error::no_victim);
        return draws[next++];
    }
};

}  // namespace

TEST_CASE("a victim draw that some space cannot map is drawn again, not rolled back", "[manager]") {
    world_memory memory;
    world_allocator frames{memory.frames()};
    auto monitor = x86_backend::make(frames, memory);
    auto guest = x86_backend::make(frames, memory);
    std::vector<page_slot> slots(8);
    std::vector<shadow_entry> index(8);
    pool_shadow_store store{slots, index};
    trap_count_tracker<> tracker;
    recording_tlb tlb;
    const virt_range bad = virt_range::of(virt_addr{0x0000'8000'0000'0000}, 2 * page_bytes);  // non-canonical
    const virt_range good = virt_range::of(virt_addr{window_base + 8 * page_bytes}, 2 * page_bytes);
    scripted_victims victims{{bad, good}};
    manager_config config;
    config.window = virt_range::of(virt_addr{window_base}, 16 * page_bytes);
    relocation_manager<x86_backend::space, top_down_finder, scripted_victims, pool_shadow_store, trap_count_tracker<>,
                       recording_tlb, world_memory>
        m{*monitor, {}, victims, store, tracker, tlb, memory, config};
    const space_id g = *m.add_guest_space(*guest);
    REQUIRE(m.guest_map(g, virt_range::of(virt_addr{window_base}, 16 * page_bytes), *memory.frames().allocate_frame(),
                        user_read_write, page_size::size_4k)
                .has_value());
    std::array<stub_page, 2> pages{stub_page{*memory.frames().allocate_frame()},
                                   stub_page{*memory.frames().allocate_frame()}};
    REQUIRE(m.place(stub_description{pages, virt_addr{0}}).has_value());
    CHECK(*m.placement() == good);
    CHECK(victims.next == 2);
    CHECK(m.stats().rollbacks == 0);
    CHECK(m.stats().placements == 1);
    CHECK(m.stats().victim_placements == 1);
    CHECK(m.stats().victim_relocations == 0);
}

TEST_CASE("every manager enumeration has a name", "[manager]") {
    for (auto k : {relocation_kind::free, relocation_kind::victim}) CHECK(std::string_view{to_string(k)} != "unknown");
    for (auto k : {tick_outcome::waiting, tick_outcome::stayed, tick_outcome::hopped})
        CHECK(std::string_view{to_string(k)} != "unknown");
    for (auto k : {hop_state::hopping, hop_state::settled}) CHECK(std::string_view{to_string(k)} != "unknown");
    for (auto k : {fault_action::retry, fault_action::emulate, fault_action::reflect})
        CHECK(std::string_view{to_string(k)} != "unknown");
    for (auto k : {fault_class::conflict, fault_class::displaced, fault_class::not_ours})
        CHECK(std::string_view{to_string(k)} != "unknown");
    for (auto k : {access_kind::read, access_kind::write, access_kind::execute})
        CHECK(std::string_view{to_string(k)} != "unknown");
    std::set<std::string_view> names;
    for (int k = 0; k <= static_cast<int>(trace_kind::rollback); ++k)
        names.insert(to_string(static_cast<trace_kind>(k)));
    CHECK(names.size() == static_cast<std::size_t>(trace_kind::rollback) + 1);
    CHECK(names.count("unknown") == 0);
}

TEMPLATE_TEST_CASE("a free range where a fixup result would not be canonical is left out and the next one taken", "[manager]", x86_backend,
                   reference_backend) {
    // The window ends at the top of the lower half: the highest free range
    // there would put the TSS stack top (the stub's end) at 2^47, which is not
    // canonical under 4-level paging, so the stack fixup refuses it.
    constexpr std::uint64_t half_top = std::uint64_t{1} << 47;
    world_options o;
    o.config.window = virt_range::from_bounds(virt_addr{half_top - 64 * page_bytes}, virt_addr{half_top - 1});
    world<TestType> w(o);
    w.add_guest();
    auto placed = w.place();
    REQUIRE(placed.has_value());
    CHECK(placed->to.last().value() == half_top - stub_bytes - 1);  // the next range down
    CHECK(w.tables().tss.rsp[0] == half_top - stub_bytes);
    CHECK(w.manager().stats().rollbacks == 1);  // the refused attempt, undone
}

TEMPLATE_TEST_CASE("a move over guest pages at the top of the space from address 0 invalidates the two ranges only",
                   "[manager]", x86_backend, reference_backend) {
    world_options o;
    o.config.window = virt_range::everything();
    world<TestType> w(o);
    const space_id g = w.add_guest();
    auto placed = w.place();  // top-down: the stub's last byte is 2^64 - 1
    REQUIRE(placed.has_value());
    const virt_range top = placed->to;
    REQUIRE(top.last().value() == ~std::uint64_t{0});
    const auto low = virt_range::of(virt_addr{0}, stub_bytes);
    REQUIRE(w.manager().relocate_to(low).has_value());
    w.guest_map(g, top.start().value(), stub_page_count);  // the guest takes the top
    w.tlb().ranges.clear();
    // Back to the top over the guest's pages: their leaves go (one flush) and
    // the stub leaves address 0 (another). The two must not merge into the
    // whole space because the first ends where the second starts modulo 2^64.
    auto moved = w.manager().relocate_to(top);
    REQUIRE(moved.has_value());
    CHECK(moved->kind == relocation_kind::victim);
    CHECK(w.tlb().all == 0);
    CHECK(w.tlb().covers(low));
    CHECK(w.tlb().covers(top));
    for (const auto& r : w.tlb().ranges) CHECK_FALSE(r.contains(virt_range::of(virt_addr{window_base}, page_bytes)));
}
