// Where lines come from: a file on disk, plain or gzip (zlib reads both), or
// a string (tests). Both hand each line with its 1-based number to a callback,
// so multi-megabyte traces are never held as text.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <zlib.h>

#include "parse_error.hpp"

namespace asreloc::lab {

using line_callback = std::function<void(std::string_view line, std::uint64_t number)>;

inline void for_each_line(std::string_view text, const line_callback& on_line) {
    std::uint64_t number = 0;
    while (!text.empty()) {
        const std::size_t nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        on_line(line, ++number);
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
    }
}

// Reads `path` line by line (gzip or plain). A failure to open or a corrupt
// gzip stream is an error for the file as a whole (line 0), or for the line
// where the stream broke.
inline std::optional<parse_error> read_lines(const std::string& path, const line_callback& on_line) {
    gzFile in = gzopen(path.c_str(), "rb");
    if (in == nullptr) return parse_error{path, 0, "cannot open"};
    gzbuffer(in, 1 << 17);
    std::string line;
    std::uint64_t number = 0;
    char chunk[4096];
    std::optional<parse_error> failed;
    while (true) {
        char* got = gzgets(in, chunk, sizeof chunk);
        if (got == nullptr) {
            int code = 0;
            const char* message = gzerror(in, &code);
            if (code != Z_OK && code != Z_STREAM_END)
                failed = parse_error{path, number + 1, std::string("cannot read: ") + message};
            else if (!line.empty())
                on_line(line, ++number);
            break;
        }
        line += got;
        if (!line.empty() && line.back() == '\n') {
            line.pop_back();
            on_line(line, ++number);
            line.clear();
        }
    }
    gzclose(in);
    return failed;
}

}  // namespace asreloc::lab
