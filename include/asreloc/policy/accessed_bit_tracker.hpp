// The accessed-bit hotness tracker: heat from the guest's own touches, read by
// harvesting (query-and-clear) the accessed bits of candidate ranges each
// period, plus the traps the monitor sees: a trap_count_tracker that also
// harvests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/hotness_tracker.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"

namespace asreloc {

template <std::size_t Capacity = 64>
class accessed_bit_tracker : public trap_count_tracker<Capacity> {
public:
    using trap_count_tracker<Capacity>::trap_count_tracker;

    // Harvests the accessed bits of `range` granule by granule: each granule
    // holding accessed pages gains one access per accessed 4 KiB page. Only
    // granules with mappings are queried (found with the mapping walk), so the
    // cost follows the mapped part of the range. Input is checked before any
    // bit is cleared, so an error leaves the space and the tracker unchanged.
    // Errors: empty_range, misaligned, non_canonical.
    template <accessed_dirty_page_table P>
    result<flush> sample(P& space, const virt_range& range) {
        if (!range.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!space.is_canonical(range.start()) || !space.is_canonical(range.last()) ||
            (range.start().value() >> 63) != (range.last().value() >> 63))
            return failure(error::non_canonical);
        const std::uint64_t g = this->config().granularity;
        flush all = flush::none();
        std::uint64_t cursor = range.start().value();
        while (true) {
            // The next mapped byte at or after the cursor.
            bool any = false;
            std::uint64_t next = 0;
            const auto rest = virt_range::from_bounds(virt_addr{cursor}, range.last());
            auto walked = space.for_each_mapping(rest, walk_order::bottom_up, [&](const mapping& m) {
                any = true;
                next = m.start.value() < cursor ? cursor : m.start.value();
                return walk_control::stop;
            });
            if (!walked) return failure(walked.error_code());
            if (!any) break;
            const std::uint64_t granule = next & ~(g - 1);
            const std::uint64_t piece_first = granule < cursor ? cursor : granule;
            const std::uint64_t granule_last = granule + (g - 1);
            const std::uint64_t piece_last = granule_last < range.last().value() ? granule_last : range.last().value();
            auto sampled = space.query_and_clear(virt_range::from_bounds(virt_addr{piece_first}, virt_addr{piece_last}),
                                                 ad_bits::accessed);
            if (!sampled) return failure(sampled.error_code());
            all.merge(sampled->invalidate);
            if (sampled->accessed_pages > 0) this->record(virt_addr{granule}, sampled->accessed_pages);
            if (piece_last == range.last().value()) break;
            cursor = piece_last + 1;
        }
        return all;
    }
};

static_assert(hotness_tracker<accessed_bit_tracker<>>);

}  // namespace asreloc
