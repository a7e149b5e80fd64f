// The maps layout format: one /proc/PID/maps snapshot of a process, as in
// ../shared/data/layouts/ and layouts32/ (see their READMEs). One region a line:
//     start_hex end_hex perms offset_hex path
// start inclusive, end exclusive, both 4 KiB aligned; perms [r-][w-][x-][ps].
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

struct region_perms {
    bool read = false;
    bool write = false;
    bool execute = false;
    bool shared = false;

    bool operator==(const region_perms&) const = default;
};

struct maps_region {
    std::uint64_t start = 0;  // inclusive
    std::uint64_t end = 0;    // exclusive
    region_perms perms;
    std::uint64_t offset = 0;
    std::string path;

    std::uint64_t size() const noexcept { return end - start; }
};

inline std::optional<region_perms> parse_region_perms(std::string_view s) noexcept {
    if (s.size() != 4) return std::nullopt;
    region_perms p;
    if (s[0] != 'r' && s[0] != '-') return std::nullopt;
    if (s[1] != 'w' && s[1] != '-') return std::nullopt;
    if (s[2] != 'x' && s[2] != '-') return std::nullopt;
    if (s[3] != 'p' && s[3] != 's') return std::nullopt;
    p.read = s[0] == 'r';
    p.write = s[1] == 'w';
    p.execute = s[2] == 'x';
    p.shared = s[3] == 's';
    return p;
}

inline constexpr std::uint64_t lab_page_bytes = 4096;

// One region line (not a comment: the readers skip those first).
inline parsed<maps_region> parse_maps_line(std::string_view line, const source_line& at) {
    const auto f = split_fields(line);
    if (f.size() < 5)
        return error_at(at, "too few fields (" + std::to_string(f.size()) +
                                "; a region needs 5: start end perms offset path)");
    if (f.size() > 5) return error_at(at, "too many fields (" + std::to_string(f.size()) + "; a region has 5)");
    const auto start = parse_hex(f[0]);
    if (!start) return error_at(at, "bad hex start address " + quoted(f[0]));
    const auto end = parse_hex(f[1]);
    if (!end) return error_at(at, "bad hex end address " + quoted(f[1]));
    if (*end <= *start) return error_at(at, "end " + std::string(f[1]) + " is not above start " + std::string(f[0]));
    if (*start % lab_page_bytes != 0 || *end % lab_page_bytes != 0)
        return error_at(at, "region " + std::string(f[0]) + "-" + std::string(f[1]) + " is not 4 KiB aligned");
    const auto perms = parse_region_perms(f[2]);
    if (!perms) return error_at(at, "unknown perms " + quoted(f[2]) + " (expected [r-][w-][x-][ps])");
    const auto offset = parse_hex(f[3]);
    if (!offset) return error_at(at, "bad hex offset " + quoted(f[3]));
    return maps_region{*start, *end, *perms, *offset, std::string(f[4])};
}

struct maps_layout {
    std::string file;
    std::string header;  // the first '#' line, without the '#'
    std::vector<maps_region> regions;
    std::vector<parse_error> errors;

    bool ok() const noexcept { return errors.empty(); }
};

// Accepts lines one by one; besides each line's own checks it checks that
// regions ascend without overlapping and that a header's "regions: N" matches.
class maps_layout_reader {
public:
    explicit maps_layout_reader(std::string file) { layout_.file = std::move(file); }

    void add_line(std::string_view line, std::uint64_t number) {
        if (is_comment_or_blank(line)) {
            if (layout_.header.empty() && line.starts_with('#')) {
                layout_.header = std::string(line.substr(1));
                header_line_ = number;
            }
            return;
        }
        auto r = parse_maps_line(line, {layout_.file, number});
        if (!r) {
            layout_.errors.push_back(r.error());
            return;
        }
        if (!layout_.regions.empty() && r->start < layout_.regions.back().end) {
            layout_.errors.push_back(error_at({layout_.file, number},
                                              "region starting at " + to_hex(r->start) +
                                                  " overlaps or precedes the previous one (ending at " +
                                                  to_hex(layout_.regions.back().end) + ")"));
            return;
        }
        layout_.regions.push_back(std::move(r.value()));
        ++lines_;
    }

    maps_layout finish() && {
        if (const auto n = header_value(layout_.header, "regions")) {
            const auto expected = parse_decimal(*n);
            if (!expected)
                layout_.errors.push_back({layout_.file, header_line_, "bad region count " + quoted(*n) + " in header"});
            else if (layout_.errors.empty() && *expected != lines_)
                layout_.errors.push_back({layout_.file, header_line_,
                                          "header says " + std::to_string(*expected) + " regions, file has " +
                                              std::to_string(lines_)});
        }
        return std::move(layout_);
    }

private:
    maps_layout layout_;
    std::uint64_t lines_ = 0;
    std::uint64_t header_line_ = 0;
};

inline maps_layout parse_maps_layout(std::string_view text, std::string file) {
    maps_layout_reader reader(std::move(file));
    for_each_line(text, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    return std::move(reader).finish();
}

inline maps_layout read_maps_layout(const std::string& path) {
    maps_layout_reader reader(path);
    auto failed = read_lines(path, [&](std::string_view l, std::uint64_t n) { reader.add_line(l, n); });
    auto layout = std::move(reader).finish();
    if (failed) layout.errors.push_back(*failed);
    return layout;
}

}  // namespace asreloc::lab
