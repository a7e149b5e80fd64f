// The real address spaces the benchmarks run on: layouts read from a data
// directory (../shared/data or the bundled tests/data, parsed by the policy
// lab's readers in lab/formats/) and built into real x86-64 page tables.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/x86_64/page_table.hpp"
#include "formats/guest_ranges.hpp"
#include "formats/maps_layout.hpp"
#include "sim/host_memory.hpp"

namespace asreloc::bench {

using space = x86_64::page_table<lab::host_memory, offset_phys_map>;

enum class layout_kind { process64, process32, guest_os };

struct layout_region {
    std::uint64_t start = 0;  // inclusive, 4 KiB aligned
    std::uint64_t end = 0;    // exclusive
    attributes attrs;
};

// One guest: its regions, the tables built from them, and the window a stub
// search looks in (the hull of the guest's mappings: a search from either end
// must cross the populated part, which is where finders differ).
struct guest_layout {
    std::string name;  // file name without the folder and the extension
    layout_kind kind = layout_kind::process64;
    x86_64::paging_mode mode = x86_64::paging_mode::four_level;
    std::vector<layout_region> regions;
    std::unique_ptr<space> table;
    virt_range window;
    std::uint64_t mapped_bytes = 0;
    std::size_t table_frames = 0;  // page-table pages the backend allocated

    // Regions a 64-bit Linux process can hold (the user half, below 2^47).
    std::vector<layout_region> user_regions() const {
        std::vector<layout_region> out;
        for (const auto& r : regions)
            if (r.attrs.user && r.end <= (std::uint64_t{1} << 47)) out.push_back(r);
        return out;
    }
};

// The next `s` boundary above va; the top of the space saturates (a region in
// the last page-size block of the 64-bit space has nothing above it).
inline std::uint64_t next_boundary(std::uint64_t va, page_size s) {
    const std::uint64_t next = (va | (bytes(s) - 1)) + 1;
    return next == 0 ? ~std::uint64_t{0} : next;
}

// Maps every region with the largest pages its alignment allows (1 GiB, 2 MiB,
// then 4 KiB), as a kernel's direct map or transparent huge pages would. Leaf
// frames are made-up addresses with the same alignment: finders, walks and
// translations never touch a leaf's frame.
inline std::optional<std::string> build_tables(guest_layout& g, lab::host_memory& frames, const offset_phys_map& memory) {
    auto created = space::create(frames, memory, g.mode);
    if (!created) return std::string("cannot create a root table: ") + to_string(created.error_code());
    const std::size_t before = frames.frames_in_use();
    g.table = std::make_unique<space>(std::move(*created));
    constexpr std::uint64_t phys_mask = (std::uint64_t{1} << 45) - 1;
    for (const auto& r : g.regions) {
        std::uint64_t va = r.start;
        while (va < r.end) {
            page_size s = page_size::size_4k;
            for (page_size big : {page_size::size_1g, page_size::size_2m}) {
                if (is_aligned(va, bytes(big)) && r.end - va >= bytes(big)) {
                    s = big;
                    break;
                }
            }
            // One map call per run of equal-sized pages.
            std::uint64_t run_end = va + bytes(s);
            if (s == page_size::size_4k) {
                const std::uint64_t next_2m = next_boundary(va, page_size::size_2m);
                run_end = std::min(r.end, next_2m);
            } else if (s == page_size::size_2m) {
                const std::uint64_t next_1g = next_boundary(va, page_size::size_1g);
                run_end = std::min(align_down(r.end, bytes(s)), next_1g);
            } else {
                run_end = align_down(r.end, bytes(s));
            }
            const auto range = virt_range::of(virt_addr{va}, run_end - va);
            auto mapped = g.table->map(range, phys_addr{va & phys_mask}, r.attrs, s);
            if (!mapped) return "cannot map " + lab::to_hex(va) + "-" + lab::to_hex(run_end) + ": " +
                                to_string(mapped.error_code());
            mapped->ignore();  // the space is not loaded on any CPU
            g.mapped_bytes += run_end - va;
            va = run_end;
        }
    }
    g.table_frames = frames.frames_in_use() - before;
    std::uint64_t lo = g.regions.front().start, hi = g.regions.front().end;
    for (const auto& r : g.regions) {
        lo = std::min(lo, r.start);
        hi = std::max(hi, r.end);
    }
    g.window = virt_range::from_bounds(virt_addr{lo}, virt_addr{hi - 1});
    return std::nullopt;
}

inline std::string stem_of(const std::filesystem::path& p) {
    std::string name = p.filename().string();
    for (const char* ext : {".gz", ".maps", ".ranges"})
        if (name.size() > std::string(ext).size() && name.ends_with(ext)) name.resize(name.size() - std::string(ext).size());
    return name;
}

// A /proc/PID/maps snapshot. 64-bit: the user half only ([vsyscall] sits
// outside it). Every region is user-accessible.
inline std::optional<guest_layout> read_process_layout(const std::filesystem::path& p, layout_kind kind,
                                                       std::vector<std::string>& errors) {
    auto parsed = lab::read_maps_layout(p.string());
    for (const auto& e : parsed.errors) errors.push_back(e.describe());
    if (!parsed.ok()) return std::nullopt;
    guest_layout g;
    g.name = stem_of(p);
    g.kind = kind;
    const std::uint64_t top = kind == layout_kind::process32 ? std::uint64_t{1} << 32 : std::uint64_t{1} << 47;
    for (const auto& r : parsed.regions) {
        if (r.end > top) continue;
        g.regions.push_back({r.start, r.end,
                             attributes{.writable = r.perms.write, .user = true, .executable = r.perms.execute}});
    }
    if (g.regions.empty()) return std::nullopt;
    return g;
}

// A whole guest-OS space from the guest's page tables; 32-bit guests are built
// into 4-level tables over their 4 GiB (the finder's window keeps them there).
inline std::optional<guest_layout> read_guest_os(const std::filesystem::path& p, std::vector<std::string>& errors) {
    auto dump = lab::read_guest_space(p.string());
    for (const auto& e : dump.errors) errors.push_back(e.describe());
    if (!dump.ok()) return std::nullopt;
    guest_layout g;
    g.name = stem_of(p);
    g.kind = layout_kind::guest_os;
    g.mode = dump.paging == lab::guest_paging::five_level ? x86_64::paging_mode::five_level
                                                          : x86_64::paging_mode::four_level;
    for (const auto& r : dump.ranges)
        g.regions.push_back({r.start, r.end,
                             attributes{.writable = r.writable, .user = r.user, .executable = r.executable}});
    if (g.regions.empty()) return std::nullopt;
    return g;
}

struct load_options {
    bool all_snapshots = false;  // else one snapshot per program or boot
};

// The files of one folder, sorted; with `one_per_group`, only the last
// snapshot of each program/boot (the name before its ".tN"/".sNN").
inline std::vector<std::filesystem::path> files_in(const std::filesystem::path& dir,
                                                   const std::vector<std::string>& exts, bool one_per_group) {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return out;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
        const std::string n = e.path().filename().string();
        for (const auto& x : exts)
            if (n.ends_with(x)) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    if (!one_per_group) return out;
    std::map<std::string, std::filesystem::path> last;
    for (const auto& p : out) {
        const std::string s = stem_of(p);
        last[s.substr(0, s.rfind('.'))] = p;
    }
    out.clear();
    for (auto& [group, p] : last) out.push_back(p);
    return out;
}

inline std::vector<guest_layout> load_layouts(const std::filesystem::path& data, const load_options& o,
                                              std::vector<std::string>& errors) {
    std::vector<guest_layout> out;
    for (const auto& p : files_in(data / "layouts", {".maps", ".maps.gz"}, !o.all_snapshots))
        if (auto g = read_process_layout(p, layout_kind::process64, errors)) out.push_back(std::move(*g));
    for (const auto& p : files_in(data / "layouts32", {".maps", ".maps.gz"}, !o.all_snapshots))
        if (auto g = read_process_layout(p, layout_kind::process32, errors)) out.push_back(std::move(*g));
    for (const auto& p : files_in(data / "guest-os", {".ranges", ".ranges.gz"}, !o.all_snapshots))
        if (auto g = read_guest_os(p, errors)) out.push_back(std::move(*g));
    return out;
}

inline const char* kind_name(layout_kind k) noexcept {
    switch (k) {
    case layout_kind::process64: return "64-bit process";
    case layout_kind::process32: return "32-bit process";
    case layout_kind::guest_os: return "guest OS";
    }
    return "?";
}

}  // namespace asreloc::bench
