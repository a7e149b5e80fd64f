#include <catch2/catch.hpp>

#include <string>

#include "lab/formats/guest_ranges.hpp"

using namespace asreloc::lab;

namespace {

const source_line where{"g.ranges.gz", 4};

std::string error_of(std::string_view line) {
    auto r = parse_guest_range_line(line, where);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().line == 4);
    return r.error().message;
}

}  // namespace

TEST_CASE("a guest range line gives the range and its permissions") {
    auto r = parse_guest_range_line("ffffffff81000000 ffffffff82000000 r-x-", where);
    REQUIRE(r.has_value());
    CHECK(r->start == 0xffffffff81000000);
    CHECK(r->size() == 0x1000000);
    CHECK_FALSE(r->writable);
    CHECK(r->executable);
    CHECK_FALSE(r->user);
    CHECK(parse_guest_range_line("bffff000 c0000000 rwxu", where)->user);
}

TEST_CASE("a guest range line with a wrong field count, bad hex or a bad range is refused") {
    CHECK(error_of("1000 2000").find("too few fields (2") != std::string::npos);
    CHECK(error_of("1000 2000 r--- x").find("too many fields (4") != std::string::npos);
    CHECK(error_of("10x0 2000 r---") == "bad hex start address '10x0'");
    CHECK(error_of("1000 20y0 r---") == "bad hex end address '20y0'");
    CHECK(error_of("2000 1000 r---").find("not above start") != std::string::npos);
    CHECK(error_of("1000 1800 r---").find("not 4 KiB aligned") != std::string::npos);
}

TEST_CASE("a guest range line with unknown perms is refused") {
    for (const char* p : {"-w--", "rwx", "rwxuu", "rpxu", "rwsu", "rwxU"})
        CHECK(error_of(std::string("1000 2000 ") + p).find("unknown perms") != std::string::npos);
}

TEST_CASE("a guest dump needs a paging mode in its header and a matching range count") {
    auto ok = parse_guest_space("# guest: x; paging: 3-level PAE (32-bit); cr3: 1; ranges: 1\n1000 2000 rw-u\n", "g");
    CHECK(ok.ok());
    CHECK(ok.paging == guest_paging::three_level_pae);
    auto none = parse_guest_space("# guest: x; ranges: 1\n1000 2000 rw-u\n", "g");
    REQUIRE(none.errors.size() == 1);
    CHECK(none.errors[0].describe().starts_with("g:1: header names no known paging mode"));
    auto count = parse_guest_space("# paging: 4-level; ranges: 2\n1000 2000 rw-u\n", "g");
    REQUIRE(count.errors.size() == 1);
    CHECK(count.errors[0].message == "header says 2 ranges, file has 1");
    auto overlap = parse_guest_space("# paging: 5-level\n1000 3000 rw-u\n2000 4000 r---\n", "g");
    REQUIRE(overlap.errors.size() == 1);
    CHECK(overlap.errors[0].line == 3);
    CHECK(overlap.paging == guest_paging::five_level);
}

TEST_CASE("the bundled guest-OS dumps parse without errors") {
    for (const char* name : {"guest-os/i386-pae-dev.s3.ranges.gz", "guest-os/i386-nopae-dev.s1.ranges.gz"}) {
        auto d = read_guest_space(std::string(ASRELOC_TEST_DATA_DIR) + "/" + name);
        INFO(name);
        for (const auto& e : d.errors) INFO(e.describe());
        CHECK(d.ok());
    }
    auto pae = read_guest_space(std::string(ASRELOC_TEST_DATA_DIR) + "/guest-os/i386-pae-dev.s3.ranges.gz");
    CHECK(pae.ranges.size() == 27);
    CHECK(pae.paging == guest_paging::three_level_pae);
}
