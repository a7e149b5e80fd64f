// Trap routing: fast traps stay in the guest space, slow ones cross to the
// monitor and back, the rest are reflected to the guest; every path counted.
#include <asreloc/manager/trap_routing.hpp>

#include <array>
#include <cstring>

#include <catch2/catch.hpp>

using namespace asreloc;

namespace {

enum class event : std::uint8_t { none, to_monitor, to_guest, fast_handler, slow_handler, forward_handler };

// Records the order in which the switch hooks and handlers run, and which
// address space each handler ran in.
struct journal {
    std::array<event, 16> events{};
    std::size_t count = 0;
    bool in_monitor_space = false;
    bool fast_ran_in_monitor = true;
    bool slow_ran_in_monitor = false;
    trap_disposition fast_answer = trap_disposition::resume_guest;
    trap_disposition slow_answer = trap_disposition::resume_guest;

    void log(event e) { events.at(count++) = e; }
};

void to_monitor(void* c) noexcept {
    auto& j = *static_cast<journal*>(c);
    j.in_monitor_space = true;
    j.log(event::to_monitor);
}
void to_guest(void* c) noexcept {
    auto& j = *static_cast<journal*>(c);
    j.in_monitor_space = false;
    j.log(event::to_guest);
}
trap_disposition fast_handler(void* c, trap_frame& f) noexcept {
    auto& j = *static_cast<journal*>(c);
    j.fast_ran_in_monitor = j.in_monitor_space;
    j.log(event::fast_handler);
    f.rip += 2;  // e.g. emulate a 2-byte instruction and skip it
    return j.fast_answer;
}
trap_disposition slow_handler(void* c, trap_frame& f) noexcept {
    auto& j = *static_cast<journal*>(c);
    j.slow_ran_in_monitor = j.in_monitor_space;
    j.log(event::slow_handler);
    f.rip += 3;
    return j.slow_answer;
}
trap_disposition forward_handler(void* c, trap_frame&) noexcept {
    auto& j = *static_cast<journal*>(c);
    j.slow_ran_in_monitor = j.in_monitor_space;
    j.log(event::forward_handler);
    return trap_disposition::resume_guest;
}

trap_frame frame_for(std::uint8_t vector) {
    trap_frame f;
    f.vector = vector;
    f.rip = 0x40'1000;
    f.cs = 0x1B;
    f.ss = 0x23;
    f.rsp = 0x7FFF'F000;
    return f;
}

trap_router router_for(journal& j) {
    trap_router r{address_space_switch{&to_monitor, &to_guest, &j}};
    return r;
}

}  // namespace

TEST_CASE("claim 7: a fast trap is handled in the stub without leaving the guest space") {
    journal j;
    trap_router r = router_for(j);
    r.route_fast(6, &fast_handler, &j);  // #UD emulated in the stub
    r.route_slow(14, &slow_handler, &j);

    trap_frame f = frame_for(6);
    CHECK(r.dispatch(f) == trap_outcome::resume_guest);
    REQUIRE(j.count == 1);
    CHECK(j.events[0] == event::fast_handler);  // no switch hook ran, before or after
    CHECK_FALSE(j.fast_ran_in_monitor);
    CHECK_FALSE(j.in_monitor_space);
    CHECK(f.rip == 0x40'1002);
    CHECK(r.fast_traps() == 1);
    CHECK(r.slow_traps() == 0);
    CHECK(r.reflected() == 0);
    CHECK(r.table()[6].hits == 1);
}

TEST_CASE("claim 8: a slow trap is forwarded to the monitor across the address-space switch and returns to the guest") {
    journal j;
    trap_router r = router_for(j);
    r.route_fast(6, &fast_handler, &j);
    r.route_slow(14, &slow_handler, &j);  // #PF: conflict or displaced content

    trap_frame f = frame_for(14);
    f.fault_address = 0xFFFF'8000'0010'0000;
    CHECK(r.dispatch(f) == trap_outcome::resume_guest);
    REQUIRE(j.count == 3);
    CHECK(j.events[0] == event::to_monitor);
    CHECK(j.events[1] == event::slow_handler);
    CHECK(j.events[2] == event::to_guest);
    CHECK(j.slow_ran_in_monitor);
    CHECK_FALSE(j.in_monitor_space);  // back in the guest space
    CHECK(f.rip == 0x40'1003);
    CHECK(r.slow_traps() == 1);
    CHECK(r.fast_traps() == 0);
    CHECK(r.reflected() == 0);
    CHECK(r.table()[14].hits == 1);
}

TEST_CASE("a vector without a route is reflected to the guest without running anything") {
    journal j;
    trap_router r = router_for(j);
    r.route_fast(6, &fast_handler, &j);
    trap_frame f = frame_for(32);
    const trap_frame before = f;
    CHECK(r.dispatch(f) == trap_outcome::reflect);
    CHECK(j.count == 0);
    CHECK(std::memcmp(&f, &before, sizeof f) == 0);
    CHECK(r.reflected() == 1);
    CHECK(r.fast_traps() == 0);
    CHECK(r.slow_traps() == 0);
}

TEST_CASE("a route set back to reflect no longer runs its handler") {
    journal j;
    trap_router r = router_for(j);
    r.route_slow(13, &slow_handler, &j);
    r.route_reflect(13);
    trap_frame f = frame_for(13);
    CHECK(r.dispatch(f) == trap_outcome::reflect);
    CHECK(j.count == 0);
    CHECK(r.table()[13].handler == nullptr);
    CHECK(r.table()[13].route == trap_route::reflect);
}

TEST_CASE("a slow handler that finds the trap is not ours switches back and reflects it") {
    journal j;
    j.slow_answer = trap_disposition::reflect;
    trap_router r = router_for(j);
    r.route_slow(14, &slow_handler, &j);
    trap_frame f = frame_for(14);
    CHECK(r.dispatch(f) == trap_outcome::reflect);
    REQUIRE(j.count == 3);
    CHECK(j.events[2] == event::to_guest);
    CHECK(r.slow_traps() == 1);
    CHECK(r.reflected() == 1);
}

TEST_CASE("a fast handler that needs the monitor forwards across the switch to the forward handler") {
    journal j;
    j.fast_answer = trap_disposition::forward_to_monitor;
    trap_router r = router_for(j);
    r.route_fast(14, &fast_handler, &j);
    r.set_forward_handler(&forward_handler, &j);
    trap_frame f = frame_for(14);
    CHECK(r.dispatch(f) == trap_outcome::resume_guest);
    REQUIRE(j.count == 4);
    CHECK(j.events[0] == event::fast_handler);
    CHECK(j.events[1] == event::to_monitor);
    CHECK(j.events[2] == event::forward_handler);
    CHECK(j.events[3] == event::to_guest);
    CHECK_FALSE(j.fast_ran_in_monitor);
    CHECK(j.slow_ran_in_monitor);
    CHECK(r.fast_traps() == 0);
    CHECK(r.slow_traps() == 1);
    CHECK(r.forwarded() == 1);
}

TEST_CASE("counters add up over a mixed stream of traps, per path and per vector") {
    journal j;
    trap_router r = router_for(j);
    r.route_fast(1, &fast_handler, &j);
    r.route_slow(2, &slow_handler, &j);
    const std::array<std::uint8_t, 9> stream{1, 2, 3, 1, 1, 2, 255, 0, 1};
    for (const auto v : stream) {
        j.count = 0;
        trap_frame f = frame_for(v);
        (void)r.dispatch(f);
    }
    CHECK(r.fast_traps() == 4);
    CHECK(r.slow_traps() == 2);
    CHECK(r.reflected() == 3);
    CHECK(r.table()[1].hits == 4);
    CHECK(r.table()[2].hits == 2);
    CHECK(r.table()[255].hits == 1);
    CHECK(r.table()[4].hits == 0);
}

TEST_CASE("the route table is laid out for entry code: vector n at byte 32 n") {
    journal j;
    trap_router r = router_for(j);
    r.route_slow(7, &slow_handler, &j);
    unsigned char raw[sizeof(trap_route_table)];
    std::memcpy(raw, &r.table(), sizeof raw);
    trap_handler_fn h = nullptr;
    std::memcpy(&h, raw + 7 * 32, sizeof h);
    CHECK(h == &slow_handler);
    void* c = nullptr;
    std::memcpy(&c, raw + 7 * 32 + 8, sizeof c);
    CHECK(c == &j);
    CHECK(raw[7 * 32 + 16] == static_cast<unsigned char>(trap_route::slow));
    CHECK(raw[6 * 32 + 16] == static_cast<unsigned char>(trap_route::reflect));
}

TEST_CASE("the router fixup moves the handler, context and hook pointers that lie in the stub and reverses exactly") {
    constexpr std::uint64_t stub_size = 0x4000;
    constexpr std::uint64_t old_base = 0xFFFF'8000'0010'0000;
    constexpr std::uint64_t new_base = 0x0000'6000'0000'0000;
    const auto fake = [](std::uint64_t v) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(v)); };
    const auto fake_fn = [](std::uint64_t v) { return reinterpret_cast<trap_handler_fn>(static_cast<std::uintptr_t>(v)); };

    trap_router r;
    r.route_fast(3, fake_fn(old_base + 0x1000), fake(old_base + 0x3000));  // a stub handler and its data
    r.route_slow(14, fake_fn(0xFFFF'FFFF'8020'0000), fake(0xFFFF'FFFF'8030'0000));  // monitor only
    r.set_address_space_switch({reinterpret_cast<void (*)(void*) noexcept>(static_cast<std::uintptr_t>(old_base + 0x1800)),
                                reinterpret_cast<void (*)(void*) noexcept>(static_cast<std::uintptr_t>(old_base + 0x1900)),
                                fake(old_base + stub_size)});  // first byte after the stub: stays
    unsigned char before[sizeof(trap_router)];
    std::memcpy(before, &r, sizeof before);

    trap_router_fixup_context ctx{&r, stub_size};
    REQUIRE(trap_router_fixup(ctx)(virt_addr{old_base}, virt_addr{new_base}));
    CHECK(r.table()[3].handler == fake_fn(new_base + 0x1000));
    CHECK(r.table()[3].context == fake(new_base + 0x3000));
    CHECK(r.table()[14].handler == fake_fn(0xFFFF'FFFF'8020'0000));
    CHECK(r.table()[14].context == fake(0xFFFF'FFFF'8030'0000));
    CHECK(reinterpret_cast<std::uintptr_t>(r.space_switch().to_monitor) == new_base + 0x1800);
    CHECK(r.space_switch().context == fake(old_base + stub_size));
    CHECK(r.table()[3].route == trap_route::fast);

    REQUIRE(trap_router_fixup(ctx)(virt_addr{new_base}, virt_addr{old_base}));
    CHECK(std::memcmp(before, &r, sizeof before) == 0);

    r.route_slow(20, fake_fn(new_base + 0x10), nullptr);  // already points where the stub would land
    std::memcpy(before, &r, sizeof before);
    CHECK(failed_with(trap_router_fixup(ctx)(virt_addr{old_base}, virt_addr{new_base}), error::fixup_refused));
    CHECK(std::memcmp(before, &r, sizeof before) == 0);
}
