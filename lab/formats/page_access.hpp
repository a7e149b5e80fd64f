// The page-access format: per window of 100,000 guest accesses, how often
// each 4 KiB page was touched (../shared/data/page-access/, gzip text):
//     window page_hex count
// Windows count up from 0 and never go back; a page number is an address >> 12.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fields.hpp"
#include "line_source.hpp"
#include "parse_error.hpp"

namespace asreloc::lab {

// 16 bytes, so a five-million-line trace fits in 80 MB.
struct page_access {
    std::uint32_t window = 0;
    std::uint32_t count = 0;
    std::uint64_t page = 0;  // virtual address >> 12

    std::uint64_t address() const noexcept { return page << 12; }
};

inline parsed<page_access> parse_access_line(std::string_view line, const source_line& at) {
    const auto f = split_fields(line);
    if (f.size() < 3)
        return error_at(at, "too few fields (" + std::to_string(f.size()) + "; a line needs: window page count)");
    if (f.size() > 3) return error_at(at, "too many fields (" + std::to_string(f.size()) + "; a line has 3)");
    const auto window = parse_decimal(f[0]);
    if (!window) return error_at(at, "bad decimal window " + quoted(f[0]));
    if (*window > UINT32_MAX) return error_at(at, "window " + std::string(f[0]) + " is out of range");
    const auto page = parse_hex(f[1]);
    if (!page) return error_at(at, "bad hex page " + quoted(f[1]));
    if (*page >> 52 != 0) return error_at(at, "page " + std::string(f[1]) + " is above 2^52 (a page number is address >> 12)");
    const auto count = parse_decimal(f[2]);
    if (!count) return error_at(at, "bad decimal count " + quoted(f[2]));
    if (*count == 0) return error_at(at, "zero count");
    if (*count > UINT32_MAX) return error_at(at, "count " + std::string(f[2]) + " is out of range");
    return page_access{static_cast<std::uint32_t>(*window), static_cast<std::uint32_t>(*count), *page};
}

struct access_trace {
    std::string file;
    std::string header;
    std::vector<page_access> accesses;  // in file order: windows ascending
    std::vector<parse_error> errors;

    bool ok() const noexcept { return errors.empty(); }
    std::uint64_t windows() const noexcept { return accesses.empty() ? 0 : accesses.back().window + std::uint64_t{1}; }
};

// Besides each line's own checks: windows never decrease.
class access_trace_reader {
public:
    explicit access_trace_reader(std::string file) { trace_.file = std::move(file); }

    void add_line(std::string_view line, std::uint64_t number) {
        if (is_comment_or_blank(line)) {
            if (trace_.header.empty() && line.starts_with('#')) trace_.header = std::string(line.substr(1));
            return;
        }
        auto a = parse_access_line(line, {trace_.file, number});
        if (!a) {
            trace_.errors.push_back(a.error());
            return;
        }
        if (!trace_.accesses.empty() && a->window < trace_.accesses.back().window) {
            trace_.errors.push_back(error_at({trace_.file, number},
                                             "window " + std::to_string(a->window) + " comes after window " +
                                                 std::to_string(trace_.accesses.back().window)));
            return;
        }
        trace_.accesses.push_back(*a);
    }

    access_trace finish() && { return std::move(trace_); }

private:
    access_trace trace_;
};

inline access_trace parse_access_trace(std::string_view text, std::string file) {
    access_trace_reader reader(std::move(file));
    for_each_line(text, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    return std::move(reader).finish();
}

inline access_trace read_access_trace(const std::string& path) {
    access_trace_reader reader(path);
    auto failed = read_lines(path, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    auto trace = std::move(reader).finish();
    if (failed) trace.errors.push_back(*failed);
    return trace;
}

}  // namespace asreloc::lab
