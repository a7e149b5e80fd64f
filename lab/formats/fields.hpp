// Splitting a text line into whitespace-separated fields and reading hex and
// decimal numbers from them, strictly: no prefixes, no signs, no overflow, so
// a corrupt field is an error instead of a silently wrong address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asreloc::lab {

inline bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

inline std::vector<std::string_view> split_fields(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && is_blank(line[i])) ++i;
        const std::size_t start = i;
        while (i < line.size() && !is_blank(line[i])) ++i;
        if (i > start) out.push_back(line.substr(start, i - start));
    }
    return out;
}

// Lines the readers skip: empty ones and '#' comments.
inline bool is_comment_or_blank(std::string_view line) noexcept {
    for (char c : line) {
        if (is_blank(c)) continue;
        return c == '#';
    }
    return true;
}

// Lower- or upper-case hex digits only, at most 16 of them.
inline std::optional<std::uint64_t> parse_hex(std::string_view s) noexcept {
    if (s.empty() || s.size() > 16) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        unsigned d = 0;
        if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
        else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a') + 10;
        else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A') + 10;
        else return std::nullopt;
        v = (v << 4) | d;
    }
    return v;
}

inline std::optional<std::uint64_t> parse_decimal(std::string_view s) noexcept {
    if (s.empty() || s.size() > 20) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return std::nullopt;
        v = v * 10 + d;
    }
    return v;
}

inline std::string to_hex(std::uint64_t v) {
    char buf[20];
    std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
    return buf;
}

inline std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// The value after "key: " in a '#' header line ("...; regions: 40"), if any.
inline std::optional<std::string_view> header_value(std::string_view header, std::string_view key) {
    const std::string needle = std::string(key) + ": ";
    const std::size_t at = header.find(needle);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view rest = header.substr(at + needle.size());
    const std::size_t end = rest.find(';');
    if (end != std::string_view::npos) rest = rest.substr(0, end);
    while (!rest.empty() && is_blank(rest.back())) rest.remove_suffix(1);
    return rest;
}

}  // namespace asreloc::lab
