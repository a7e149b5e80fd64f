#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "lab/costs.hpp"

using namespace asreloc::lab;

TEST_CASE("the modeled overhead adds the slow path, emulation, remaps, copies and harvests") {
    cost_table t;
    t.trap.ns = 1000;
    t.address_space_switch.ns = 100;
    t.walk.ns = 10;
    t.remap_page.ns = 50;
    t.copy_page.ns = 200;
    t.harvest_page.ns = 2;
    const cost_inputs in{.conflicts = 2, .moves = 3, .stub_pages = 4, .pages_copied = 5, .shadow_accesses = 6,
                         .sampled_pages = 7};
    // 2 x 1200 + 6 x 1210 + 3 x 4 x 50 + 5 x 200 + 7 x 2
    CHECK(modeled_ns(t, in) == Approx(2400.0 + 7260.0 + 600.0 + 1000.0 + 14.0));
    CHECK(modeled_ns(t, {}) == 0.0);
}

TEST_CASE("a cost file overrides entries by name and reports bad lines by number") {
    char name[] = "/tmp/asreloc-lab-costs-XXXXXX";
    const int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    std::FILE* f = fdopen(fd, "w");
    std::fputs("# costs from bench\ncopy_page 62.5 bench BM_copy median\nwalk\nteleport 1\ntrap fast\nremap_page 80\n", f);
    std::fclose(f);
    cost_table t;
    const auto errors = load_costs(name, t);
    std::remove(name);
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].line == 3);
    CHECK(errors[0].message.find("too few fields") != std::string::npos);
    CHECK(errors[1].describe() == std::string(name) + ":4: unknown cost 'teleport'");
    CHECK(errors[2].line == 5);
    CHECK(errors[2].message == "bad nanoseconds 'fast'");
    CHECK(t.copy_page.ns == 62.5);
    CHECK(t.copy_page.source == "bench BM_copy median");
    CHECK(t.remap_page.ns == 80);
    CHECK(t.trap.ns == 1000);  // the bad line left the default alone
}
