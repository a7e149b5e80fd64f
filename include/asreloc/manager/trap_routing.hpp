// Trap routing: which traps the stub handles itself in the guest space (fast
// path, no address-space switch), which it forwards to the monitor across the
// switch (slow path), and which are not ours and go to the guest's own
// handler (reflect). The route table has a fixed layout that stub entry code
// reads; trap_router is the dispatcher that runs the chosen path and counts.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <gsl/assert>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/manager/fixup.hpp"

namespace asreloc {

// What stub entry code saves before dispatch. The last six fields are, in
// order, what an x86-64 CPU pushes on a trap in 64-bit mode (SDM vol. 3A,
// 6.14.2, Figure 6-9: error code, RIP, CS, RFLAGS, RSP, SS; entry code pushes
// a zero error code for vectors without one), so entry code pushes CR2 and the
// vector below the CPU frame and passes the stack pointer as the frame.
struct trap_frame {
    std::uint64_t vector = 0;
    std::uint64_t fault_address = 0;  // CR2 for #PF, else 0
    std::uint64_t error_code = 0;
    std::uint64_t rip = 0;
    std::uint64_t cs = 0;
    std::uint64_t rflags = 0;
    std::uint64_t rsp = 0;
    std::uint64_t ss = 0;
};
static_assert(sizeof(trap_frame) == 64 && std::is_standard_layout_v<trap_frame>);
static_assert(offsetof(trap_frame, vector) == 0 && offsetof(trap_frame, fault_address) == 8);
static_assert(offsetof(trap_frame, error_code) == 16 && offsetof(trap_frame, rip) == 24);
static_assert(offsetof(trap_frame, ss) == 56);

enum class trap_route : std::uint8_t {
    reflect = 0,  // not ours: deliver to the guest's own handler (the default)
    fast = 1,     // handled in the stub, in the guest space (claim 7)
    slow = 2,     // forwarded to the monitor across the address-space switch (claim 8)
};

// What a handler decided. A fast handler may return forward_to_monitor when
// the case needs the monitor (e.g. a conflict that calls for a relocation);
// a slow handler may return reflect when the trap turns out not to be ours.
enum class trap_disposition : std::uint8_t { resume_guest = 0, forward_to_monitor = 1, reflect = 2 };

// What the router tells entry code to do next.
enum class trap_outcome : std::uint8_t {
    resume_guest = 0,  // return to the guest (IRETQ on the possibly edited frame)
    reflect = 1,       // deliver to the guest's handler for frame.vector
};

using trap_handler_fn = trap_disposition (*)(void* context, trap_frame& frame) noexcept;

// One vector's route: 32 bytes so entry code indexes with vector << 5.
//   0: handler (null for reflect)   8: context   16: route   24: hits
struct trap_route_entry {
    trap_handler_fn handler = nullptr;
    void* context = nullptr;
    trap_route route = trap_route::reflect;
    std::uint8_t reserved[7] = {};
    std::uint64_t hits = 0;  // traps taken on this vector, whatever the route
};
static_assert(sizeof(trap_route_entry) == 32 && std::is_standard_layout_v<trap_route_entry>);
static_assert(offsetof(trap_route_entry, handler) == 0 && offsetof(trap_route_entry, context) == 8);
static_assert(offsetof(trap_route_entry, route) == 16 && offsetof(trap_route_entry, hits) == 24);

inline constexpr std::size_t trap_vectors = 256;

// The routes of all 256 vectors: two 4 KiB pages, vector n at byte 32 n.
struct trap_route_table {
    std::array<trap_route_entry, trap_vectors> entries{};

    constexpr const trap_route_entry& operator[](std::uint8_t vector) const noexcept { return entries[vector]; }
    constexpr trap_route_entry& operator[](std::uint8_t vector) noexcept { return entries[vector]; }
};
static_assert(sizeof(trap_route_table) == 8192 && std::is_standard_layout_v<trap_route_table>);

// The embedder's address-space switch (on x86-64: a CR3 load). The stub calls
// to_monitor before a slow handler and to_guest after it.
struct address_space_switch {
    void (*to_monitor)(void* context) noexcept = nullptr;
    void (*to_guest)(void* context) noexcept = nullptr;
    void* context = nullptr;
};

// Dispatches traps along the route table. It lives, with its table, in the
// stub's data pages: the fast path reads it from the guest space. Not
// reentrant: a trap taken inside a handler must not dispatch through the same
// router (give such vectors an IST stack and a separate router, or keep
// handlers trap-free).
class trap_router {
public:
    constexpr trap_router() noexcept = default;
    constexpr explicit trap_router(address_space_switch space_switch) noexcept : switch_(space_switch) {}

    constexpr void route_fast(std::uint8_t vector, trap_handler_fn handler, void* context) noexcept {
        Expects(handler != nullptr);
        set(vector, trap_route::fast, handler, context);
    }
    constexpr void route_slow(std::uint8_t vector, trap_handler_fn handler, void* context) noexcept {
        Expects(handler != nullptr);
        set(vector, trap_route::slow, handler, context);
    }
    constexpr void route_reflect(std::uint8_t vector) noexcept { set(vector, trap_route::reflect, nullptr, nullptr); }
    constexpr void set_address_space_switch(address_space_switch s) noexcept { switch_ = s; }
    // The monitor-side handler that runs, after the switch, when a fast
    // handler returns forward_to_monitor.
    constexpr void set_forward_handler(trap_handler_fn handler, void* context) noexcept {
        Expects(handler != nullptr);
        forward_ = {handler, context};
    }

    // Runs the route of frame.vector. Vectors above 255 are a programming error.
    trap_outcome dispatch(trap_frame& frame) noexcept {
        Expects(frame.vector < trap_vectors);
        trap_route_entry& e = table_.entries[frame.vector];
        ++e.hits;
        switch (e.route) {
        case trap_route::fast: return dispatch_fast(e, frame);
        case trap_route::slow: return dispatch_slow(e.handler, e.context, frame);
        case trap_route::reflect: break;
        }
        return reflect();
    }

    constexpr const trap_route_table& table() const noexcept { return table_; }
    constexpr trap_route_table& table() noexcept { return table_; }
    constexpr const address_space_switch& space_switch() const noexcept { return switch_; }
    constexpr address_space_switch& space_switch() noexcept { return switch_; }

    // Traps completed in the stub without leaving the guest space.
    constexpr std::uint64_t fast_traps() const noexcept { return fast_traps_; }
    // Traps that crossed to the monitor (including fast ones a handler forwarded).
    constexpr std::uint64_t slow_traps() const noexcept { return slow_traps_; }
    // Traps handed to the guest's own handler, by route or by a handler's decision.
    constexpr std::uint64_t reflected() const noexcept { return reflected_; }
    // Fast traps whose handler asked for the monitor (also counted in slow_traps).
    constexpr std::uint64_t forwarded() const noexcept { return forwarded_; }

private:
    constexpr void set(std::uint8_t vector, trap_route r, trap_handler_fn h, void* c) noexcept {
        trap_route_entry& e = table_.entries[vector];
        e.route = r;
        e.handler = h;
        e.context = c;
    }

    trap_outcome dispatch_fast(const trap_route_entry& e, trap_frame& frame) noexcept {
        switch (e.handler(e.context, frame)) {
        case trap_disposition::resume_guest: ++fast_traps_; return trap_outcome::resume_guest;
        case trap_disposition::reflect: return reflect();
        case trap_disposition::forward_to_monitor: break;
        }
        ++forwarded_;
        // An entry holds one handler, and a fast one runs in the guest space;
        // the monitor side of a forwarded trap is the forward handler.
        Expects(forward_.handler != nullptr);
        return dispatch_slow(forward_.handler, forward_.context, frame);
    }

    trap_outcome dispatch_slow(trap_handler_fn handler, void* context, trap_frame& frame) noexcept {
        Expects(switch_.to_monitor != nullptr && switch_.to_guest != nullptr);
        ++slow_traps_;
        switch_.to_monitor(switch_.context);
        const trap_disposition d = handler(context, frame);
        switch_.to_guest(switch_.context);
        return d == trap_disposition::reflect ? reflect() : trap_outcome::resume_guest;
    }

    constexpr trap_outcome reflect() noexcept {
        ++reflected_;
        return trap_outcome::reflect;
    }

    struct forward_target {
        trap_handler_fn handler = nullptr;
        void* context = nullptr;
    };

    trap_route_table table_{};
    address_space_switch switch_{};
    forward_target forward_{};
    std::uint64_t fast_traps_ = 0;
    std::uint64_t slow_traps_ = 0;
    std::uint64_t reflected_ = 0;
    std::uint64_t forwarded_ = 0;
};

// The fast handlers, their contexts and the switch hook live in the stub when
// the router does, so they follow it when it moves: a fixup over the route
// table and the switch hook, with the rule of x86_64/fixups.hpp (a pointer in
// [from, from + stub_size) moves; a move that a pointer staying put would make
// ambiguous is refused unchanged, so the reverse move restores every byte).
struct trap_router_fixup_context {
    trap_router* router = nullptr;
    std::uint64_t stub_size = 0;
};

namespace detail {
template <class Pointer>
std::uint64_t pointer_bits(Pointer p) noexcept {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p));
}
template <class Pointer>
Pointer pointer_from(std::uint64_t v) noexcept {
    return reinterpret_cast<Pointer>(static_cast<std::uintptr_t>(v));
}

struct router_move {
    std::uint64_t from, to, size;
    bool moves(std::uint64_t v) const noexcept { return v - from < size; }
    bool blocks(std::uint64_t v) const noexcept { return !moves(v) && v - to < size; }
    template <class Pointer>
    void apply(Pointer& p) const noexcept {
        const std::uint64_t v = pointer_bits(p);
        if (moves(v)) p = pointer_from<Pointer>(v - from + to);
    }
};
}  // namespace detail

inline status relocate_trap_router(void* context, virt_addr from, virt_addr to) noexcept {
    auto& c = *static_cast<trap_router_fixup_context*>(context);
    Expects(c.router != nullptr);
    const detail::router_move m{from.value(), to.value(), c.stub_size};
    trap_route_table& t = c.router->table();
    address_space_switch& s = c.router->space_switch();
    const auto pointers_ok = [&](auto... ps) { return (!m.blocks(detail::pointer_bits(ps)) && ...); };
    for (const auto& e : t.entries) {
        if (!pointers_ok(e.handler, e.context)) return failure(error::fixup_refused);
    }
    if (!pointers_ok(s.to_monitor, s.to_guest, s.context)) return failure(error::fixup_refused);
    for (auto& e : t.entries) {
        m.apply(e.handler);
        m.apply(e.context);
    }
    m.apply(s.to_monitor);
    m.apply(s.to_guest);
    m.apply(s.context);
    return {};
}
inline fixup trap_router_fixup(trap_router_fixup_context& context) noexcept {
    return fixup{&relocate_trap_router, &context};
}

}  // namespace asreloc
