// The cost table that turns a replay's counts into modeled time: what a trap,
// an address-space switch, a page copy, a stub remap and a page walk cost.
// Copy, remap and walk are measured in this build (measure_costs, or a file
// written from bench/ results); trap and switch come from the literature
// (sources in lab/README.md). Every entry carries where it came from.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "lab/formats/fields.hpp"
#include "lab/formats/line_source.hpp"
#include "lab/formats/parse_error.hpp"

namespace asreloc::lab {

struct cost_entry {
    double ns = 0;
    std::string source;
};

struct cost_table {
    // A guest fault taken into the monitor's handler and back (one exception
    // round trip, no switch).
    cost_entry trap{1000, "literature: minor #PF round trip ~1 us median (rdtsc, Core i7-11th gen, Linux 6.6) [2]"};
    // One guest-space <-> monitor-space switch (MOV CR3); the slow path pays two.
    cost_entry address_space_switch{100, "literature: CR3 switch 'adds a few hundred cycles' (Linux Documentation/x86/pti.rst) [1]"};
    // Copy one 4 KiB page (displacing into the shadow store or restoring).
    cost_entry copy_page{100, "default: 4 KiB memcpy at ~40 GB/s (no measurement)"};
    // Page-table work of a move per stub page: unmap + map in the guest and the monitor space.
    cost_entry remap_page{200, "default: estimate (no measurement)"};
    // One page walk (an emulated access's translation, an accessed-bit harvest per page).
    cost_entry walk{20, "default: four dependent cached loads (no measurement)"};
    // Harvesting (query-and-clear) the accessed bit of one mapped page.
    cost_entry harvest_page{5, "default: one PTE read-modify-write in a sequential scan (no measurement)"};

    std::vector<std::pair<std::string, const cost_entry*>> entries() const {
        return {{"trap", &trap}, {"address_space_switch", &address_space_switch}, {"copy_page", &copy_page},
                {"remap_page", &remap_page}, {"walk", &walk}, {"harvest_page", &harvest_page}};
    }
    cost_entry* find(std::string_view name) {
        if (name == "trap") return &trap;
        if (name == "address_space_switch") return &address_space_switch;
        if (name == "copy_page") return &copy_page;
        if (name == "remap_page") return &remap_page;
        if (name == "walk") return &walk;
        if (name == "harvest_page") return &harvest_page;
        return nullptr;
    }
};

// Overrides from a file of lines `name ns [source words...]` ('#' comments),
// e.g. written from bench/ results. Unknown names and bad numbers are errors
// naming the line; the entries before them still apply.
inline std::vector<parse_error> load_costs(const std::string& path, cost_table& table) {
    std::vector<parse_error> errors;
    auto failed = read_lines(path, [&](std::string_view line, std::uint64_t n) {
        if (is_comment_or_blank(line)) return;
        const auto f = split_fields(line);
        if (f.size() < 2) {
            errors.push_back({path, n, "too few fields (a cost line is: name ns [source])"});
            return;
        }
        cost_entry* e = table.find(f[0]);
        if (e == nullptr) {
            errors.push_back({path, n, "unknown cost " + quoted(f[0])});
            return;
        }
        const std::string value(f[1]);
        char* end = nullptr;
        const double ns = std::strtod(value.c_str(), &end);
        if (end == value.c_str() || *end != '\0' || !(ns >= 0)) {
            errors.push_back({path, n, "bad nanoseconds " + quoted(f[1])});
            return;
        }
        std::string source;
        for (std::size_t i = 2; i < f.size(); ++i) source += (i > 2 ? " " : "") + std::string(f[i]);
        *e = {ns, source.empty() ? "file " + path : source};
    });
    if (failed) errors.push_back(*failed);
    return errors;
}

// The counts a replay produced, in the units the model prices.
struct cost_inputs {
    std::uint64_t conflicts = 0;
    std::uint64_t moves = 0;  // placements, conflict moves and hops
    std::uint64_t stub_pages = 0;
    std::uint64_t pages_copied = 0;
    std::uint64_t shadow_accesses = 0;
    std::uint64_t sampled_pages = 0;
};

// Modeled monitor time in ns. A conflict and an emulated shadow access each
// take the slow path (trap, switch to the monitor space and back); an
// emulated access also walks the guest tables once; a move remaps every stub
// page; displaced and restored pages are copied; harvesting reads and clears
// each harvested page's accessed bit.
inline double modeled_ns(const cost_table& t, const cost_inputs& in) {
    const double slow_path = t.trap.ns + 2 * t.address_space_switch.ns;
    return static_cast<double>(in.conflicts) * slow_path +
           static_cast<double>(in.shadow_accesses) * (slow_path + t.walk.ns) +
           static_cast<double>(in.moves * in.stub_pages) * t.remap_page.ns +
           static_cast<double>(in.pages_copied) * t.copy_page.ns + static_cast<double>(in.sampled_pages) * t.harvest_page.ns;
}

}  // namespace asreloc::lab
