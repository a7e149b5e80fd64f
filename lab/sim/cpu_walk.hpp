// The processor's side of a guest access, for replays: walk the real x86-64
// tables from the root as the MMU does (SDM vol. 3A, 4.5), fault unless every
// level is present and user-accessible (the guest runs at CPL 3), and set the
// accessed flag in every entry used and the dirty flag in the leaf on a write
// (SDM vol. 3A, 4.8) -- which is what an accessed-bit tracker later harvests.
#pragma once

#include <cstdint>
#include <cstring>

#include "asreloc/core/address.hpp"
#include "asreloc/paging/phys_map.hpp"
#include "asreloc/x86_64/entry.hpp"
#include "asreloc/x86_64/paging_mode.hpp"

namespace asreloc::lab {

enum class walk_outcome : std::uint8_t { ok, not_present, supervisor_only, write_protected };

template <phys_map Map>
walk_outcome cpu_access(const Map& memory, phys_addr root, x86_64::paging_mode mode, std::uint64_t va, bool write) {
    using namespace asreloc::x86_64;
    phys_addr table = root;
    bool user = true;
    bool writable = true;
    for (unsigned level = levels(mode); level >= 1; --level) {
        auto* slots = reinterpret_cast<std::uint64_t*>(memory.to_virt(table));
        std::uint64_t& slot = slots[table_index(va, level)];
        entry e{slot};
        if (!e.present()) return walk_outcome::not_present;
        user = user && e.user_supervisor();
        writable = writable && e.read_write();
        if (e.is_leaf(level)) {
            if (!user) return walk_outcome::supervisor_only;
            if (write && !writable) return walk_outcome::write_protected;
            slot |= bits::accessed | (write ? bits::dirty : 0);
            return walk_outcome::ok;
        }
        slot |= bits::accessed;
        table = e.table_address();
    }
    return walk_outcome::not_present;
}

}  // namespace asreloc::lab
