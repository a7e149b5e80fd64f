// The stub as the manager sees it: the 4 KiB frames (IDT, GDT, TSS, entry
// code, their data) that must be mapped wherever the guest runs, at
// consecutive pages of the placement, the same frames in every guest space
// and in the monitor space.
#pragma once

#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"

namespace asreloc {

// One page of the stub. `attrs.user` is ignored: the manager always maps the
// stub supervisor-only, so that every guest touch (the guest runs
// deprivileged, at CPL 3) traps (claims 5 and 6).
struct stub_page {
    phys_addr frame;  // 4 KiB aligned
    attributes attrs = read_write;
};

// The stub handed to relocation_manager::place. Page i sits at placement + i * 4 KiB.
struct stub_description {
    std::span<const stub_page> pages;
    // The base address the stub's pointers (IDT gate offsets, TSS base, ...)
    // are built for now; the fixups run from here to the first placement.
    // Usually the address the embedder used to build the tables, e.g. the
    // argument of x86_64::stub_tables::place.
    virt_addr built_for{};
};

// The attributes a stub page gets in every space: what the embedder asked for,
// never reachable from the deprivileged guest.
constexpr attributes supervisor_only(attributes a) noexcept {
    a.user = false;
    return a;
}

}  // namespace asreloc
