// The guest-OS ranges format: a whole guest address space (user and kernel
// halves) read from the guest's own page tables (../shared/data/guest-os/,
// gzip text). One maximal run of identically-permissioned pages a line:
//     start_hex end_hex perms        perms = r[w-][x-][u-]
// The header names the paging mode, which sets the size of the space.
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

enum class guest_paging : std::uint8_t { unknown, two_level, three_level_pae, four_level, five_level };

inline const char* to_string(guest_paging p) noexcept {
    switch (p) {
    case guest_paging::unknown: return "unknown";
    case guest_paging::two_level: return "2-level";
    case guest_paging::three_level_pae: return "3-level PAE";
    case guest_paging::four_level: return "4-level";
    case guest_paging::five_level: return "5-level";
    }
    return "?";
}

struct guest_range {
    std::uint64_t start = 0;  // inclusive
    std::uint64_t end = 0;    // exclusive; 0 for a range that ends at the top of the 64-bit space
    bool writable = false;
    bool executable = false;
    bool user = false;

    std::uint64_t size() const noexcept { return end - start; }
};

inline parsed<guest_range> parse_guest_range_line(std::string_view line, const source_line& at) {
    const auto f = split_fields(line);
    if (f.size() < 3)
        return error_at(at, "too few fields (" + std::to_string(f.size()) + "; a range needs: start end perms)");
    if (f.size() > 3) return error_at(at, "too many fields (" + std::to_string(f.size()) + "; a range has 3)");
    const auto start = parse_hex(f[0]);
    if (!start) return error_at(at, "bad hex start address " + quoted(f[0]));
    const auto end = parse_hex(f[1]);
    if (!end) return error_at(at, "bad hex end address " + quoted(f[1]));
    // end 0 would be the top of the space; the dumps never reach it, so it is an error too.
    if (*end <= *start) return error_at(at, "end " + std::string(f[1]) + " is not above start " + std::string(f[0]));
    if (*start % 4096 != 0 || *end % 4096 != 0)
        return error_at(at, "range " + std::string(f[0]) + "-" + std::string(f[1]) + " is not 4 KiB aligned");
    const std::string_view p = f[2];
    if (p.size() != 4 || p[0] != 'r' || (p[1] != 'w' && p[1] != '-') || (p[2] != 'x' && p[2] != '-') ||
        (p[3] != 'u' && p[3] != '-'))
        return error_at(at, "unknown perms " + quoted(p) + " (expected r[w-][x-][u-])");
    return guest_range{*start, *end, p[1] == 'w', p[2] == 'x', p[3] == 'u'};
}

inline guest_paging parse_guest_paging(std::string_view header) {
    const auto v = header_value(header, "paging");
    if (!v) return guest_paging::unknown;
    if (v->starts_with("2-level")) return guest_paging::two_level;
    if (v->starts_with("3-level")) return guest_paging::three_level_pae;
    if (v->starts_with("4-level")) return guest_paging::four_level;
    if (v->starts_with("5-level")) return guest_paging::five_level;
    return guest_paging::unknown;
}

struct guest_space_dump {
    std::string file;
    std::string header;
    guest_paging paging = guest_paging::unknown;
    std::vector<guest_range> ranges;
    std::vector<parse_error> errors;

    bool ok() const noexcept { return errors.empty(); }
};

// Besides each line's own checks: ranges ascend without overlapping, the
// header names a paging mode, and its "ranges: N" matches.
class guest_space_reader {
public:
    explicit guest_space_reader(std::string file) { dump_.file = std::move(file); }

    void add_line(std::string_view line, std::uint64_t number) {
        if (is_comment_or_blank(line)) {
            if (dump_.header.empty() && line.starts_with('#')) {
                dump_.header = std::string(line.substr(1));
                header_line_ = number;
            }
            return;
        }
        auto r = parse_guest_range_line(line, {dump_.file, number});
        if (!r) {
            dump_.errors.push_back(r.error());
            return;
        }
        if (!dump_.ranges.empty() && r->start < dump_.ranges.back().end) {
            dump_.errors.push_back(error_at({dump_.file, number}, "range starting at " + to_hex(r->start) +
                                                                      " overlaps or precedes the previous one"));
            return;
        }
        dump_.ranges.push_back(*r);
        ++lines_;
    }

    guest_space_dump finish() && {
        dump_.paging = parse_guest_paging(dump_.header);
        if (dump_.paging == guest_paging::unknown)
            dump_.errors.push_back({dump_.file, header_line_ == 0 ? 1 : header_line_,
                                    "header names no known paging mode (paging: 2-level, 3-level PAE, 4-level, 5-level)"});
        if (const auto n = header_value(dump_.header, "ranges")) {
            const auto expected = parse_decimal(*n);
            if (!expected)
                dump_.errors.push_back({dump_.file, header_line_, "bad range count " + quoted(*n) + " in header"});
            else if (dump_.errors.empty() && *expected != lines_)
                dump_.errors.push_back({dump_.file, header_line_,
                                        "header says " + std::to_string(*expected) + " ranges, file has " +
                                            std::to_string(lines_)});
        }
        return std::move(dump_);
    }

private:
    guest_space_dump dump_;
    std::uint64_t lines_ = 0;
    std::uint64_t header_line_ = 0;
};

inline guest_space_dump parse_guest_space(std::string_view text, std::string file) {
    guest_space_reader reader(std::move(file));
    for_each_line(text, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    return std::move(reader).finish();
}

inline guest_space_dump read_guest_space(const std::string& path) {
    guest_space_reader reader(path);
    auto failed = read_lines(path, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    auto dump = std::move(reader).finish();
    if (failed) dump.errors.push_back(*failed);
    return dump;
}

}  // namespace asreloc::lab
