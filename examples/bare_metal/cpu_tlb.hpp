// The asreloc::tlb hook for a space loaded in CR3 on this (only) CPU: invlpg
// per page for small ranges, a CR3 reload beyond. Nothing the kernel maps is
// global, so a CR3 reload drops every translation.
#pragma once

#include <cstdint>

#include <asreloc/core/address.hpp>
#include <asreloc/paging/tlb.hpp>

#include "cpu.hpp"

namespace bare_metal {

struct cpu_tlb {
    std::uint64_t pages = 0, reloads = 0;

    void invalidate_page(asreloc::virt_addr va) noexcept {
        invlpg(va.value());
        ++pages;
    }
    void invalidate_range(asreloc::virt_range r) noexcept {
        constexpr std::uint64_t page = 4096;
        if (r.size() == 0 || r.size() / page > 512) return invalidate_all();
        for (std::uint64_t va = r.start().value(); va - r.start().value() < r.size(); va += page)
            invalidate_page(asreloc::virt_addr{va});
    }
    void invalidate_all() noexcept {
        write_cr3(read_cr3());
        ++reloads;
    }
};
static_assert(asreloc::tlb<cpu_tlb>);

}  // namespace bare_metal
