// Fixups: everything that points into the stub and must follow it when it
// moves (IDT gate offsets, the TSS descriptor base, IDTR/GDTR images, TSS
// stack pointers, the embedder's own pointers). A fixup is a plain function
// pointer and a context, so fixed-capacity tables of them need no heap and no
// virtual dispatch.
#pragma once

#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"

namespace asreloc {

// apply(context, from, to): rewrite the target for a stub whose base moves
// from `from` to `to`. It may refuse (error::fixup_refused), and then the
// whole relocation is rolled back: every fixup already applied is called again
// with (to, from), which it must accept and which must restore its target
// bit for bit.
using fixup_fn = status (*)(void* context, virt_addr from, virt_addr to) noexcept;

struct fixup {
    fixup_fn apply = nullptr;
    void* context = nullptr;

    status operator()(virt_addr from, virt_addr to) const noexcept { return apply(context, from, to); }
};

// The simplest fixup: a 64-bit slot holding an address inside the stub.
inline status relocate_slot(void* context, virt_addr from, virt_addr to) noexcept {
    auto* slot = static_cast<std::uint64_t*>(context);
    *slot = *slot - from.value() + to.value();
    return {};
}
inline fixup slot_fixup(std::uint64_t* slot) noexcept { return fixup{&relocate_slot, slot}; }

}  // namespace asreloc
