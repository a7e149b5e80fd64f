#include <catch2/catch.hpp>

#include <string>

#include "lab/formats/mapping_events.hpp"

using namespace asreloc::lab;

namespace {

const source_line where{"guest.events", 12};

std::string error_of(std::string_view line) {
    auto r = parse_event_line(line, where);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().describe().starts_with("guest.events:12: "));
    return r.error().message;
}

}  // namespace

TEST_CASE("every event op parses with its fields") {
    auto m = parse_event_line("1 map 7f4e3cdef000 2000", where);
    REQUIRE(m.has_value());
    CHECK(m->op == event_op::map);
    CHECK(m->addr == 0x7f4e3cdef000);
    CHECK(m->len == 0x2000);
    auto r = parse_event_line("11 remap f7f19000 9000 a000 f7f0f000", where);
    REQUIRE(r.has_value());
    CHECK(r->op == event_op::remap);
    CHECK(r->len == 0x9000);
    CHECK(r->new_len == 0xa000);
    CHECK(r->new_addr == 0xf7f0f000);
    auto b = parse_event_line("0 brk 5595775cb123 0", where);
    REQUIRE(b.has_value());
    CHECK(b->op == event_op::brk);
    CHECK(b->addr == 0x5595775cb123);  // a break need not be page aligned
    CHECK(parse_event_line("2 unmap 1000 1", where)->op == event_op::unmap);
    CHECK(parse_event_line("3 protect 1000 a213", where)->op == event_op::protect);
    CHECK(round_up_to_page(0xa213) == 0xb000);
}

TEST_CASE("an event with too few or too many fields for its op is refused") {
    CHECK(error_of("1 map 1000").find("too few fields (3") != std::string::npos);
    CHECK(error_of("1").find("too few fields (1") != std::string::npos);
    CHECK(error_of("1 remap 1000 1000 2000").find("too few fields (5; remap needs 6)") != std::string::npos);
    CHECK(error_of("1 map 1000 1000 2000").find("too many fields (5; map has 4)") != std::string::npos);
    CHECK(error_of("1 remap 1000 1000 2000 3000 4000").find("too many fields") != std::string::npos);
}

TEST_CASE("an event with an unknown op is refused") {
    CHECK(error_of("1 mmap 1000 1000") == "unknown op 'mmap' (expected map, unmap, remap, protect or brk)");
    CHECK(error_of("1 MAP 1000 1000").find("unknown op") != std::string::npos);
}

TEST_CASE("an event with bad numbers names the field") {
    CHECK(error_of("x1 map 1000 1000").find("bad decimal sequence number 'x1'") != std::string::npos);
    CHECK(error_of("-1 map 1000 1000").find("bad decimal sequence number") != std::string::npos);
    CHECK(error_of("1 map 10z0 1000").find("bad hex address '10z0'") != std::string::npos);
    CHECK(error_of("1 map 1000 q").find("bad hex length 'q'") != std::string::npos);
    CHECK(error_of("1 remap 1000 1000 k 2000").find("bad hex new length 'k'") != std::string::npos);
    CHECK(error_of("1 remap 1000 1000 2000 k").find("bad hex new address 'k'") != std::string::npos);
}

TEST_CASE("an event range must be page aligned, non-empty and not wrap") {
    CHECK(error_of("1 map 1800 1000").find("not 4 KiB aligned") != std::string::npos);
    CHECK(error_of("1 unmap 1000 0") == "zero length");
    CHECK(error_of("1 map fffffffffffff000 2000").find("wraps") != std::string::npos);
    CHECK(error_of("1 map 1000 ffffffffffffffff").find("wraps") != std::string::npos);
    CHECK(error_of("1 remap 1000 1000 0 2000") == "zero new length");
    CHECK(error_of("1 remap 1000 1000 1000 2800").find("new address 2800 is not 4 KiB aligned") != std::string::npos);
    CHECK(error_of("1 brk 5000 10").find("brk has length 10, expected 0") != std::string::npos);
}

TEST_CASE("a trace reports bad lines and out-of-order sequence numbers and keeps the rest") {
    auto t = parse_event_trace("# header\n0 brk 1000 0\n1 map 2000 1000\n1 map 3000 1000\nbroken line\n5 unmap 2000 1000\n",
                               "g.events");
    REQUIRE(t.errors.size() == 2);
    CHECK(t.errors[0].describe() == "g.events:4: sequence number 1 does not follow 1");
    CHECK(t.errors[1].line == 5);
    CHECK(t.events.size() == 3);
    CHECK(t.header == " header");
}

TEST_CASE("the bundled event traces parse without errors") {
    for (const char* name : {"mapping-events/sort-numbers.events", "mapping-events/tar-gzip-doc.events",
                             "layouts32/busybox-sort.events", "layouts32/xz-decompress.events"}) {
        auto t = read_event_trace(std::string(ASRELOC_TEST_DATA_DIR) + "/" + name);
        INFO(name);
        for (const auto& e : t.errors) INFO(e.describe());
        CHECK(t.ok());
        CHECK(t.events.size() >= 30);
    }
    CHECK(read_event_trace(std::string(ASRELOC_TEST_DATA_DIR) + "/mapping-events/sort-numbers.events").events.size() == 65);
}
