// Parsing errors as values: which file, which line, what was wrong. Every
// reader of lab/formats/ collects them instead of stopping, so one bad line is
// reported precisely and the caller decides what to skip.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace asreloc::lab {

// Where a line came from: a file name (as the user gave it) and a 1-based line.
struct source_line {
    std::string file;
    std::uint64_t number = 0;
};

struct parse_error {
    std::string file;
    std::uint64_t line = 0;  // 0: the file as a whole (cannot open, bad gzip stream)
    std::string message;

    // "file:line: message", the form compilers use, so editors can jump to it.
    std::string describe() const {
        if (line == 0) return file + ": " + message;
        return file + ":" + std::to_string(line) + ": " + message;
    }
};

inline parse_error error_at(const source_line& at, std::string message) {
    return parse_error{at.file, at.number, std::move(message)};
}

// A parsed value or the error that prevented it.
template <class T>
class parsed {
public:
    parsed(T value) : v_(std::move(value)) {}
    parsed(parse_error e) : v_(std::move(e)) {}

    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }
    const T& value() const { return std::get<0>(v_); }
    T& value() { return std::get<0>(v_); }
    const T& operator*() const { return value(); }
    const T* operator->() const { return &value(); }
    const parse_error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, parse_error> v_;
};

}  // namespace asreloc::lab
