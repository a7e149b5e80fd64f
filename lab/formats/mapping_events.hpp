// The mapping-event format: a process's successful mmap/munmap/mremap/
// mprotect/brk calls in order, as in ../shared/data/mapping-events/ and
// layouts32/*.events. One event a line:
//     seq op addr_hex len_hex [old/new fields for remap]
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fields.hpp"
#include "line_source.hpp"
#include "parse_error.hpp"

namespace asreloc::lab {

enum class event_op : std::uint8_t { map, unmap, remap, protect, brk };

inline const char* to_string(event_op op) noexcept {
    switch (op) {
    case event_op::map: return "map";
    case event_op::unmap: return "unmap";
    case event_op::remap: return "remap";
    case event_op::protect: return "protect";
    case event_op::brk: return "brk";
    }
    return "?";
}

inline std::optional<event_op> parse_event_op(std::string_view s) noexcept {
    if (s == "map") return event_op::map;
    if (s == "unmap") return event_op::unmap;
    if (s == "remap") return event_op::remap;
    if (s == "protect") return event_op::protect;
    if (s == "brk") return event_op::brk;
    return std::nullopt;
}

// Lengths are as requested (not rounded); page_span() rounds as the kernel does.
// remap: addr/len are the old range, new_addr/new_len the new one.
// brk: addr is the new program break (not necessarily page aligned), len 0.
struct mapping_event {
    std::uint64_t seq = 0;
    event_op op = event_op::map;
    std::uint64_t addr = 0;
    std::uint64_t len = 0;
    std::uint64_t new_len = 0;
    std::uint64_t new_addr = 0;
};

inline constexpr std::uint64_t round_up_to_page(std::uint64_t len) noexcept { return (len + 4095) & ~std::uint64_t{4095}; }

inline parsed<mapping_event> parse_event_line(std::string_view line, const source_line& at) {
    const auto f = split_fields(line);
    if (f.size() < 4)
        return error_at(at, "too few fields (" + std::to_string(f.size()) + "; an event needs: seq op addr len)");
    mapping_event e;
    const auto seq = parse_decimal(f[0]);
    if (!seq) return error_at(at, "bad decimal sequence number " + quoted(f[0]));
    e.seq = *seq;
    const auto op = parse_event_op(f[1]);
    if (!op) return error_at(at, "unknown op " + quoted(f[1]) + " (expected map, unmap, remap, protect or brk)");
    e.op = *op;
    const std::size_t want = e.op == event_op::remap ? 6 : 4;
    if (f.size() < want)
        return error_at(at, "too few fields (" + std::to_string(f.size()) + "; " + to_string(e.op) + " needs " +
                                std::to_string(want) + ")");
    if (f.size() > want)
        return error_at(at, "too many fields (" + std::to_string(f.size()) + "; " + to_string(e.op) + " has " +
                                std::to_string(want) + ")");
    const auto addr = parse_hex(f[2]);
    if (!addr) return error_at(at, "bad hex address " + quoted(f[2]));
    const auto len = parse_hex(f[3]);
    if (!len) return error_at(at, "bad hex length " + quoted(f[3]));
    e.addr = *addr;
    e.len = *len;
    if (e.op == event_op::brk) {
        if (e.len != 0) return error_at(at, "brk has length " + std::string(f[3]) + ", expected 0");
        return e;
    }
    if (e.addr % 4096 != 0) return error_at(at, "address " + std::string(f[2]) + " is not 4 KiB aligned");
    if (e.len == 0) return error_at(at, "zero length");
    if (round_up_to_page(e.len) == 0 || e.addr + round_up_to_page(e.len) - 1 < e.addr)
        return error_at(at, "range " + std::string(f[2]) + "+" + std::string(f[3]) + " wraps past 2^64");
    if (e.op == event_op::remap) {
        const auto new_len = parse_hex(f[4]);
        if (!new_len) return error_at(at, "bad hex new length " + quoted(f[4]));
        const auto new_addr = parse_hex(f[5]);
        if (!new_addr) return error_at(at, "bad hex new address " + quoted(f[5]));
        e.new_len = *new_len;
        e.new_addr = *new_addr;
        if (e.new_len == 0) return error_at(at, "zero new length");
        if (e.new_addr % 4096 != 0) return error_at(at, "new address " + std::string(f[5]) + " is not 4 KiB aligned");
        if (round_up_to_page(e.new_len) == 0 || e.new_addr + round_up_to_page(e.new_len) - 1 < e.new_addr)
            return error_at(at, "new range wraps past 2^64");
    }
    return e;
}

struct event_trace {
    std::string file;
    std::string header;
    std::vector<mapping_event> events;
    std::vector<parse_error> errors;

    bool ok() const noexcept { return errors.empty(); }
};

// Besides each line's own checks: sequence numbers must increase.
class event_trace_reader {
public:
    explicit event_trace_reader(std::string file) { trace_.file = std::move(file); }

    void add_line(std::string_view line, std::uint64_t number) {
        if (is_comment_or_blank(line)) {
            if (trace_.header.empty() && line.starts_with('#')) trace_.header = std::string(line.substr(1));
            return;
        }
        auto e = parse_event_line(line, {trace_.file, number});
        if (!e) {
            trace_.errors.push_back(e.error());
            return;
        }
        if (!trace_.events.empty() && e->seq <= trace_.events.back().seq) {
            trace_.errors.push_back(error_at({trace_.file, number},
                                             "sequence number " + std::to_string(e->seq) + " does not follow " +
                                                 std::to_string(trace_.events.back().seq)));
            return;
        }
        trace_.events.push_back(*e);
    }

    event_trace finish() && { return std::move(trace_); }

private:
    event_trace trace_;
};

inline event_trace parse_event_trace(std::string_view text, std::string file) {
    event_trace_reader reader(std::move(file));
    for_each_line(text, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    return std::move(reader).finish();
}

inline event_trace read_event_trace(const std::string& path) {
    event_trace_reader reader(path);
    auto failed = read_lines(path, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    auto trace = std::move(reader).finish();
    if (failed) trace.errors.push_back(*failed);
    return trace;
}

}  // namespace asreloc::lab
