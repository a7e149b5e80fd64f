#include <catch2/catch.hpp>

#include <string>

#include "lab/formats/maps_layout.hpp"

using namespace asreloc::lab;

namespace {

const source_line where{"guest.maps", 7};

std::string error_of(std::string_view line) {
    auto r = parse_maps_line(line, where);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().file == "guest.maps");
    CHECK(r.error().line == 7);
    return r.error().message;
}

}  // namespace

TEST_CASE("a maps line gives the region, its perms, offset and path") {
    auto r = parse_maps_line("5610535bd000 5610535cf000 r-xp 00003000 /usr/bin/sort", where);
    REQUIRE(r.has_value());
    CHECK(r->start == 0x5610535bd000);
    CHECK(r->end == 0x5610535cf000);
    CHECK(r->size() == 0x12000);
    CHECK(r->perms == region_perms{true, false, true, false});
    CHECK(r->offset == 0x3000);
    CHECK(r->path == "/usr/bin/sort");
    auto shared = parse_maps_line("7f0000000000 7f0000001000 rw-s 0 [anon]", where);
    REQUIRE(shared.has_value());
    CHECK(shared->perms.shared);
}

TEST_CASE("a maps line with too few or too many fields names the count") {
    CHECK(error_of("1000 2000 r--p 0").find("too few fields (4") != std::string::npos);
    CHECK(error_of("1000").find("too few fields (1") != std::string::npos);
    CHECK(error_of("1000 2000 r--p 0 /a b").find("too many fields (6") != std::string::npos);
}

TEST_CASE("a maps line with bad hex names the field") {
    CHECK(error_of("10g0 2000 r--p 0 x").find("bad hex start address '10g0'") != std::string::npos);
    CHECK(error_of("0x1000 2000 r--p 0 x").find("bad hex start") != std::string::npos);
    CHECK(error_of("1000 -2000 r--p 0 x").find("bad hex end address") != std::string::npos);
    CHECK(error_of("1000 2000 r--p zz x").find("bad hex offset 'zz'") != std::string::npos);
    CHECK(error_of("1000 12345678901234567 r--p 0 x").find("bad hex end") != std::string::npos);
}

TEST_CASE("a maps region must end above its start and lie on 4 KiB pages") {
    CHECK(error_of("2000 2000 r--p 0 x").find("is not above start") != std::string::npos);
    CHECK(error_of("3000 2000 r--p 0 x").find("is not above start") != std::string::npos);
    CHECK(error_of("1800 2000 r--p 0 x").find("not 4 KiB aligned") != std::string::npos);
    CHECK(error_of("1000 2001 r--p 0 x").find("not 4 KiB aligned") != std::string::npos);
}

TEST_CASE("a maps line with unknown perms is refused") {
    for (const char* p : {"r--", "r--pp", "rwxq", "xw-p", "R--p", "r-wp"})
        CHECK(error_of(std::string("1000 2000 ") + p + " 0 x").find("unknown perms") != std::string::npos);
}

TEST_CASE("a layout skips comments and blank lines, keeps the header, and counts lines from 1") {
    auto l = parse_maps_layout("# program: t; regions: 2\n\n1000 2000 r--p 0 a\n3000 5000 rw-p 0 [heap]\n", "t.maps");
    CHECK(l.ok());
    CHECK(l.header == " program: t; regions: 2");
    REQUIRE(l.regions.size() == 2);
    CHECK(l.regions[1].path == "[heap]");
}

TEST_CASE("a layout reports every bad line with its number and keeps the good ones") {
    auto l = parse_maps_layout("# x\n1000 2000 r--p 0 a\nnonsense\n3000 4000 r--p 0 b\n5000 4000 r--p 0 c\n", "t.maps");
    REQUIRE(l.errors.size() == 2);
    CHECK(l.errors[0].describe().starts_with("t.maps:3: too few fields"));
    CHECK(l.errors[1].describe().starts_with("t.maps:5: end 4000 is not above start 5000"));
    CHECK(l.regions.size() == 2);
}

TEST_CASE("a layout whose regions overlap or go backwards is an error") {
    auto l = parse_maps_layout("3000 5000 r--p 0 a\n4000 6000 r--p 0 b\n1000 2000 r--p 0 c\n", "t.maps");
    REQUIRE(l.errors.size() == 2);
    CHECK(l.errors[0].line == 2);
    CHECK(l.errors[0].message.find("overlaps") != std::string::npos);
    CHECK(l.errors[1].line == 3);
}

TEST_CASE("a layout whose header count disagrees with its lines is an error on the header line") {
    auto l = parse_maps_layout("# p; regions: 3\n1000 2000 r--p 0 a\n", "t.maps");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.errors[0].line == 1);
    CHECK(l.errors[0].message == "header says 3 regions, file has 1");
    auto bad = parse_maps_layout("# p; regions: many\n1000 2000 r--p 0 a\n", "t.maps");
    REQUIRE(bad.errors.size() == 1);
    CHECK(bad.errors[0].message.find("bad region count") != std::string::npos);
}

TEST_CASE("a layout file that cannot be opened is an error for the file as a whole") {
    auto l = read_maps_layout("/nonexistent/guest.maps");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.errors[0].line == 0);
    CHECK(l.errors[0].describe() == "/nonexistent/guest.maps: cannot open");
}

TEST_CASE("the bundled layouts parse without errors") {
    for (const char* name : {"layouts/sort-numbers.t0.maps", "layouts/tar-gzip-doc.t0.maps",
                             "layouts32/busybox-sort.t1.maps", "layouts32/xz-decompress.t0.maps"}) {
        auto l = read_maps_layout(std::string(ASRELOC_TEST_DATA_DIR) + "/" + name);
        INFO(name);
        for (const auto& e : l.errors) INFO(e.describe());
        CHECK(l.ok());
        CHECK(l.regions.size() >= 9);
    }
    CHECK(read_maps_layout(std::string(ASRELOC_TEST_DATA_DIR) + "/layouts/sort-numbers.t0.maps").regions.size() == 40);
}
