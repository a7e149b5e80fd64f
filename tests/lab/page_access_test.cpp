#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include <zlib.h>

#include "lab/formats/page_access.hpp"

using namespace asreloc::lab;

namespace {

const source_line where{"guest.windows.gz", 3};

std::string error_of(std::string_view line) {
    auto r = parse_access_line(line, where);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().line == 3);
    return r.error().message;
}

}  // namespace

TEST_CASE("an access line gives the window, the page and the count") {
    auto a = parse_access_line("12 4000 245", where);
    REQUIRE(a.has_value());
    CHECK(a->window == 12);
    CHECK(a->page == 0x4000);
    CHECK(a->address() == 0x4000000);
    CHECK(a->count == 245);
}

TEST_CASE("an access line with a wrong field count is refused") {
    CHECK(error_of("0 108").find("too few fields (2") != std::string::npos);
    CHECK(error_of("0 108 1 2").find("too many fields (4") != std::string::npos);
}

TEST_CASE("an access line with bad numbers names the field") {
    CHECK(error_of("w 108 1") == "bad decimal window 'w'");
    CHECK(error_of("0 1g8 1") == "bad hex page '1g8'");
    CHECK(error_of("0 108 1.5") == "bad decimal count '1.5'");
    CHECK(error_of("0 108 0") == "zero count");
    CHECK(error_of("0 10000000000000 1").find("above 2^52") != std::string::npos);
    CHECK(error_of("4294967296 108 1").find("window 4294967296 is out of range") != std::string::npos);
    CHECK(error_of("0 108 4294967296").find("out of range") != std::string::npos);
}

TEST_CASE("an access trace whose windows go back is an error on that line") {
    auto t = parse_access_trace("# h\n0 108 1\n1 109 2\n0 10a 3\n1 10b 4\n", "t.gz");
    REQUIRE(t.errors.size() == 1);
    CHECK(t.errors[0].describe() == "t.gz:4: window 0 comes after window 1");
    CHECK(t.accesses.size() == 3);
    CHECK(t.windows() == 2);
}

TEST_CASE("a truncated gzip trace is an error naming the file") {
    const std::string path = std::string(ASRELOC_TEST_DATA_DIR) + "/page-access/tar-gzip-doc.windows.gz";
    std::FILE* in = std::fopen(path.c_str(), "rb");
    REQUIRE(in != nullptr);
    std::string bytes(4000, '\0');
    const auto got = std::fread(bytes.data(), 1, bytes.size(), in);
    std::fclose(in);
    REQUIRE(got == bytes.size());
    char name[] = "/tmp/asreloc-lab-truncated-XXXXXX";
    const int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    std::FILE* out = fdopen(fd, "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), out);
    std::fclose(out);
    auto t = read_access_trace(name);
    std::remove(name);
    REQUIRE_FALSE(t.ok());
    CHECK(t.errors.back().file == name);
    CHECK(t.errors.back().message.find("cannot read") != std::string::npos);
}

TEST_CASE("the bundled page-access traces parse without errors") {
    auto t = read_access_trace(std::string(ASRELOC_TEST_DATA_DIR) + "/page-access/tar-gzip-doc.windows.gz");
    for (const auto& e : t.errors) INFO(e.describe());
    CHECK(t.ok());
    CHECK(t.windows() == 414);
    CHECK(t.accesses.size() == 27944);  // 27,945 lines less the header
}
