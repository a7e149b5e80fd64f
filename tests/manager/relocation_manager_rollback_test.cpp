// Transactions under fault injection: a relocation (and the other multi-step
// operations) with a failure injected at every frame allocation, every
// shadow-store insert and every fixup. After each failure the whole state —
// every space's mappings, the stub's tables and the user slot, the shadow
// store's content, the statistics but `rollbacks`, the free frames, the
// placement — equals the snapshot taken before; then, with no failure, the
// operation succeeds.
#include <catch2/catch.hpp>

#include "world.hpp"

using namespace asreloc;
using namespace asreloc::test;

namespace {

// A 2 MiB frame at the top of simulated memory, which the pool (lowest frame
// first) never reaches in these tests: the large pages' content.
phys_addr large_frame_at(std::uint64_t index_2m) {
    return phys_addr{world_memory::base.value() + index_2m * bytes(page_size::size_2m)};
}

// A monitor with two guests, a stub sitting over displaced content of both,
// and a target range that displaces more: a 2 MiB page of guest 0 (the x86-64
// backend needs frames to split it) and 4 KiB pages of guest 1. The window is
// 2 MiB-aligned so the large page fits.
constexpr std::uint64_t big = 0x8000'0000;  // 2 GiB: 2 MiB aligned, inside the canonical lower half

template <class W>
void build_scene(W& w, space_id& a, space_id& b) {
    auto& m = w.manager();
    a = w.add_guest();
    b = w.add_guest();
    // Both guests own the first 16 pages of the window: the stub displaces them.
    w.guest_map(a, window_base, 16, 0x11);
    w.guest_map(b, window_base, 16, 0x51);
    REQUIRE(w.place().has_value());
    REQUIRE(m.relocate_to(virt_range::of(virt_addr{window_base + 4 * page_bytes}, stub_bytes)).has_value());
    REQUIRE(m.stats().victim_relocations >= 1);
    REQUIRE(w.pool_store().size() == 8);
    // Guest 0: one 2 MiB page at `big`; guest 1: 4 KiB pages inside its range.
    const phys_addr large_frame = large_frame_at(15);
    REQUIRE(w.memory().contains(large_frame + (bytes(page_size::size_2m) - 1)));
    REQUIRE(m.guest_map(a, virt_range::of(virt_addr{big}, bytes(page_size::size_2m)), large_frame, user_read_write,
                        page_size::size_2m)
                .has_value());
    w.guest_map(b, big + 0x10000, 8, 0x71);
    w.note_pages(big, 512);
}

// The target: 4 pages inside the large page, over guest 1's pages.
constexpr virt_addr target{big + 0x10000 + 2 * page_bytes};

template <class W>
result<relocation_report> relocate(W& w) {
    return w.manager().relocate_to(virt_range::of(target, stub_bytes));
}

template <class W>
void check_success(W& w, const typename W::snapshot& before) {
    auto r = relocate(w);
    REQUIRE(r.has_value());
    CHECK(r->kind == relocation_kind::victim);
    CHECK(r->pages_displaced == 8);  // 4 pages of each guest
    CHECK(r->pages_restored == 8);
    CHECK(w.take() != before);
    const std::string broken = w.stub_invariant();
    INFO(broken);
    CHECK(broken.empty());
}

}  // namespace

TEMPLATE_TEST_CASE("a relocation that runs out of frames at any allocation changes nothing", "[rollback]",
                   x86_backend, reference_backend) {
    world<TestType> w;
    space_id a = 0, b = 0;
    build_scene(w, a, b);
    const auto before = w.take();
    long failures = 0;
    for (long k = 0;; ++k) {
        CAPTURE(k);
        w.allocator().fail_at(k);
        const auto rollbacks = w.manager().stats().rollbacks;
        auto r = relocate(w);
        if (r) {
            CHECK(w.allocator().calls() == k);  // every allocation of the relocation failed once
            break;
        }
        ++failures;
        CHECK(r.error_code() == error::out_of_frames);
        CHECK(w.manager().stats().rollbacks == rollbacks + 1);
        CHECK(w.take() == before);
        REQUIRE(k < 1000);
    }
    w.allocator().never_fail();
    if constexpr (std::is_same_v<TestType, x86_backend>) CHECK(failures >= 2);  // the split and the new tables
    else CHECK(failures == 0);  // the reference model never allocates frames
    const std::string broken = w.stub_invariant();
    INFO(broken);
    CHECK(broken.empty());
}

TEMPLATE_TEST_CASE("a stub of scattered frames moved across a page-table boundary rolls back at every allocation",
                   "[rollback]", x86_backend, reference_backend) {
    world<TestType> w;
    const space_id g = w.add_guest();
    // Eight frames in descending order: no two pages form a physical run.
    std::array<stub_page, 8> pages{};
    for (std::size_t i = 0; i < pages.size(); ++i) pages[pages.size() - 1 - i] = stub_page{w.guest_frame(), read_write};
    REQUIRE(pages[1].frame != pages[0].frame + page_bytes);
    REQUIRE(w.manager().place(stub_description{pages, stub_built_for}).has_value());
    // Four pages before a 2 MiB boundary and four after, where no space has
    // a page table yet: two new tables per space, and no page may stay
    // written when the second cannot be had.
    const std::uint64_t two_m = bytes(page_size::size_2m);
    const auto to = virt_range::of(virt_addr{window_base + 5 * two_m - 4 * page_bytes}, pages.size() * page_bytes);
    const auto before = w.take();
    long failures = 0;
    for (long k = 0;; ++k) {
        CAPTURE(k);
        w.allocator().fail_at(k);
        auto r = w.manager().relocate_to(to);
        if (r) break;
        ++failures;
        CHECK(r.error_code() == error::out_of_frames);
        CHECK(w.take() == before);
        REQUIRE(k < 100);
    }
    w.allocator().never_fail();
    if constexpr (std::is_same_v<TestType, x86_backend>) CHECK(failures == 4);  // two page tables in each space
    CHECK(*w.manager().placement() == to);
    for (auto* s : {&w.monitor(), &w.guest(g)}) {
        for (std::size_t i = 0; i < pages.size(); ++i) {
            CAPTURE(i);
            auto t = s->translate(to.start() + i * page_bytes);
            REQUIRE(t.has_value());
            CHECK(t->phys == pages[i].frame);
            CHECK_FALSE(t->page.attrs.user);
        }
    }
}

TEMPLATE_TEST_CASE("a relocation whose shadow store fails at any insert changes nothing", "[rollback]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    space_id a = 0, b = 0;
    build_scene(w, a, b);
    const auto before = w.take();
    long k = 0;
    for (;; ++k) {
        CAPTURE(k);
        w.store().fail_at(k);
        auto r = relocate(w);
        if (r) break;
        CHECK(r.error_code() == error::shadow_store_full);
        CHECK(w.take() == before);
        REQUIRE(k < 100);
    }
    CHECK(k == 8);  // one insert per displaced page, each one failed once
}

TEMPLATE_TEST_CASE("a relocation refused by any fixup changes nothing", "[rollback]", x86_backend,
                   reference_backend) {
    world<TestType> w;
    space_id a = 0, b = 0;
    build_scene(w, a, b);
    const auto before = w.take();
    for (std::size_t i = 0; i < w.fixups().size(); ++i) {
        CAPTURE(i);
        w.fixups()[i].refuse_next = true;
        auto r = relocate(w);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error_code() == error::fixup_refused);
        CHECK_FALSE(w.fixups()[i].refuse_next);  // it was asked, and refused
        CHECK(w.take() == before);
    }
    check_success(w, before);
}

TEMPLATE_TEST_CASE("with no failure injected the relocation succeeds after the failed attempts", "[rollback]",
                   x86_backend, reference_backend) {
    world<TestType> w;
    space_id a = 0, b = 0;
    build_scene(w, a, b);
    const auto before = w.take();
    if constexpr (std::is_same_v<TestType, x86_backend>) {
        w.allocator().fail_at(0);
        CHECK(failed_with(relocate(w), error::out_of_frames));
    }
    w.store().fail_at(3);
    CHECK(failed_with(relocate(w), error::shadow_store_full));
    w.allocator().never_fail();
    w.store().fail_at(-1);
    CHECK(w.take() == before);
    check_success(w, before);
}

TEMPLATE_TEST_CASE("a conflict resolved over a random victim rolls back at every injected failure", "[rollback]",
                   x86_backend, reference_backend) {
    // Window full: every conflict takes a victim (random: a different one on
    // each attempt, which the snapshot comparison does not care about).
    world_options o;
    o.config.window = virt_range::of(virt_addr{window_base}, 32 * page_bytes);
    world<TestType> w(o);
    const space_id a = w.add_guest();
    w.guest_map(a, window_base, 32, 0x21);
    REQUIRE(w.place().has_value());
    const virt_addr hit = w.manager().placement()->start();
    const auto before = w.take();
    long failures = 0;
    for (long k = 0;; ++k) {
        CAPTURE(k);
        w.allocator().fail_at(k);
        w.store().fail_at(k % 5);  // both kinds of failure, at different points
        auto r = w.manager().resolve_conflict(a, virt_range::of(hit, page_bytes));
        if (r) break;
        ++failures;
        CHECK(w.take() == before);
        REQUIRE(k < 1000);
    }
    w.allocator().never_fail();
    w.store().fail_at(-1);
    CHECK(failures > 0);
    CHECK_FALSE(w.manager().placement()->contains(hit));
}

TEMPLATE_TEST_CASE("adding a guest space over the placement rolls back at every injected failure", "[rollback]",
                   x86_backend, reference_backend) {
    world<TestType> w;
    const space_id a = w.add_guest();
    (void)a;
    REQUIRE(w.place().has_value());
    const virt_range p = *w.manager().placement();
    // A new guest that already maps the placement's range (and a 2 MiB page
    // around it would be too big for the window top; 4 KiB pages suffice).
    auto extra = TestType::make(w.allocator(), w.memory());
    for (std::uint64_t i = 0; i < 4; ++i)
        REQUIRE(extra->map(virt_range::of(p.start() + i * page_bytes, page_bytes), w.guest_frame(0x90), user_read_write,
                           page_size::size_4k)
                    .has_value());
    const auto extra_before = world<TestType>::dump(*extra);
    const auto before = w.take();
    long k = 0;
    for (;; ++k) {
        CAPTURE(k);
        w.allocator().fail_at(k);
        w.store().fail_at(k % 5);  // four inserts: the fifth never comes
        auto id = w.manager().add_guest_space(*extra);
        if (id) break;
        CHECK(w.take() == before);
        CHECK(world<TestType>::dump(*extra) == extra_before);
        REQUIRE(k < 100);
    }
    w.allocator().never_fail();
    w.store().fail_at(-1);
    CHECK(k >= 1);
    CHECK(w.pool_store().size() == 4);  // the new space's content under the stub is displaced
    REQUIRE(w.manager().remove_guest_space(1).has_value());
    CHECK(world<TestType>::dump(*extra) == extra_before);  // content and mappings back
    CHECK(w.pool_store().size() == 0);
}

TEMPLATE_TEST_CASE("a guest unmap around the placement rolls back when a split runs out of frames", "[rollback]",
                   x86_backend, reference_backend) {
    world<TestType> w;
    const space_id a = w.add_guest();
    auto& m = w.manager();
    // The guest owns a 2 MiB page, then 4 KiB pages (the stub will sit over
    // the first four of them), then another 2 MiB page.
    const std::uint64_t two_m = bytes(page_size::size_2m);
    const std::uint64_t mid = big + two_m;
    REQUIRE(m.guest_map(a, virt_range::of(virt_addr{big}, two_m), large_frame_at(14), user_read_write,
                        page_size::size_2m)
                .has_value());
    REQUIRE(m.guest_map(a, virt_range::of(virt_addr{mid}, two_m), large_frame_at(13), user_read_write,
                        page_size::size_4k)
                .has_value());
    REQUIRE(m.guest_map(a, virt_range::of(virt_addr{mid + two_m}, two_m), large_frame_at(12), user_read_write,
                        page_size::size_2m)
                .has_value());
    REQUIRE(w.place().has_value());
    REQUIRE(m.relocate_to(virt_range::of(virt_addr{mid}, stub_bytes)).has_value());
    REQUIRE(w.pool_store().size() == 4);
    w.note_pages(big, 3 * 512);
    // From inside the first large page to inside the last: both ends split
    // (x86-64), the middle holds displaced content.
    const auto range = virt_range::from_bounds(virt_addr{big + 0x100000}, virt_addr{mid + two_m + 0x3fff});
    const auto before = w.take();
    long k = 0;
    for (;; ++k) {
        CAPTURE(k);
        w.allocator().fail_at(k);
        auto r = m.guest_unmap(a, range);
        if (r) break;
        CHECK(r.error_code() == error::out_of_frames);
        CHECK(w.take() == before);
        REQUIRE(k < 100);
    }
    w.allocator().never_fail();
    if constexpr (std::is_same_v<TestType, x86_backend>) CHECK(k == 2);  // one table per split
    CHECK(w.pool_store().size() == 0);
    CHECK_FALSE(w.guest(a).translate(virt_addr{big + 0x100000}).has_value());
    CHECK_FALSE(w.guest(a).translate(virt_addr{mid + two_m + 0x3fff}).has_value());
    CHECK(w.guest(a).translate(virt_addr{big + 0xff000}).has_value());
    CHECK(w.guest(a).translate(virt_addr{mid + two_m + 0x4000}).has_value());
    CHECK(*m.classify(a, virt_addr{mid}) == fault_class::conflict);  // the guest gave the page up
    const std::string broken = w.stub_invariant();
    INFO(broken);
    CHECK(broken.empty());
}
