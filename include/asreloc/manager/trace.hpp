// The manager's optional trace: typed events handed to a sink the embedder
// chooses. The default sink is null_trace, for which the manager does not even
// build the events (if constexpr), so an untraced manager pays nothing.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"

namespace asreloc {

enum class trace_kind : std::uint8_t {
    placed,            // first placement: to (count: pages displaced there)
    conflict,          // `space` needs `from`, which the placement `to` overlaps; the move (or rollback) follows
    relocated_free,    // the stub moved from -> to, into a free range
    relocated_victim,  // the stub moved from -> to over guest content (count: pages displaced)
    hopped,            // a hop (also reported as relocated_*), from -> to
    settled,           // hopping stopped: placement `to` is cold
    resumed,           // hopping resumed: placement `to` heated up
    restored,          // count pages of `space` went back to the guest from the shadow store
    shadow_read,       // emulated read of count bytes at from.start() in `space`
    shadow_write,      // emulated write of count bytes at from.start() in `space`
    reflected,         // a fault at from.start() in `space` handed back to the guest
    guest_mapped,      // `space` mapped `from`
    guest_unmapped,    // `space` unmapped `from`
    space_added,       // `space` joined (the stub mapped at `to`)
    space_removed,     // `space` left
    rollback,          // an operation failed with `code` and was undone
};

constexpr const char* to_string(trace_kind k) noexcept {
    switch (k) {
    case trace_kind::placed: return "placed";
    case trace_kind::conflict: return "conflict";
    case trace_kind::relocated_free: return "relocated_free";
    case trace_kind::relocated_victim: return "relocated_victim";
    case trace_kind::hopped: return "hopped";
    case trace_kind::settled: return "settled";
    case trace_kind::resumed: return "resumed";
    case trace_kind::restored: return "restored";
    case trace_kind::shadow_read: return "shadow_read";
    case trace_kind::shadow_write: return "shadow_write";
    case trace_kind::reflected: return "reflected";
    case trace_kind::guest_mapped: return "guest_mapped";
    case trace_kind::guest_unmapped: return "guest_unmapped";
    case trace_kind::space_added: return "space_added";
    case trace_kind::space_removed: return "space_removed";
    case trace_kind::rollback: return "rollback";
    }
    return "unknown";
}

inline constexpr std::uint32_t no_space = ~std::uint32_t{0};

struct trace_event {
    trace_kind kind = trace_kind::placed;
    std::uint32_t space = no_space;
    virt_range from{};
    virt_range to{};
    std::uint64_t count = 0;
    error code = error::misaligned;  // meaningful for rollback only
};

// record(event): called synchronously, in the manager's context (possibly a
// trap handler): it must not call back into the manager.
template <class T>
concept trace_sink = requires(T& t, const trace_event& e) { t.record(e); };

struct null_trace {
    constexpr void record(const trace_event&) noexcept {}
};

// Whether the manager builds events for sink T at all.
template <class T>
inline constexpr bool is_tracing = true;
template <>
inline constexpr bool is_tracing<null_trace> = false;

// A fixed ring of the last N events (freestanding): for a kernel log or a test.
template <std::size_t N>
class ring_trace {
    static_assert(N > 0);

public:
    constexpr void record(const trace_event& e) noexcept {
        events_[total_ % N] = e;
        ++total_;
    }
    // Events recorded in all (not only those still kept).
    constexpr std::uint64_t total() const noexcept { return total_; }
    constexpr std::size_t size() const noexcept { return total_ < N ? static_cast<std::size_t>(total_) : N; }
    // The i-th oldest event still kept.
    constexpr const trace_event& operator[](std::size_t i) const noexcept {
        const std::uint64_t first = total_ < N ? 0 : total_ - N;
        return events_[(first + i) % N];
    }
    constexpr void clear() noexcept { total_ = 0; }

private:
    std::array<trace_event, N> events_{};
    std::uint64_t total_ = 0;
};

static_assert(trace_sink<null_trace> && trace_sink<ring_trace<4>>);

}  // namespace asreloc
