// The coldest-first victim selector: draws a bounded number of candidates
// uniformly (as random_victim does) and displaces the one the hotness tracker
// finds least touched, so a victim placement is likely to stay quiet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/page_table.hpp"
#include "asreloc/policy/hotness_tracker.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/victim_selector.hpp"

namespace asreloc {

// `Samples` candidates per select (drawn with replacement, so a window with
// few candidates is still served). Ties in hotness go to the lowest address,
// which keeps the choice a function of the draws and the tracker alone.
// Cost: Samples draws plus Samples hotness queries.
template <std::uniform_random_bit_generator Gen, hotness_tracker Tracker, std::size_t Samples = 8,
          std::size_t MaxBlocked = 64>
class coldest_victim {
    static_assert(Samples > 0);

public:
    coldest_victim(Gen& gen, const Tracker& tracker) noexcept : random_(gen), tracker_(&tracker) {}

    template <page_table P>
    result<virt_range> select(std::span<const P* const> spaces, const victim_request& request) {
        auto first = random_.select(spaces, request);
        if (!first) return failure(first.error_code());
        virt_range best = *first;
        std::uint32_t best_heat = tracker_->hotness(best);
        for (std::size_t i = 1; i < Samples && best_heat > 0; ++i) {
            auto next = random_.select(spaces, request);
            if (!next) return failure(next.error_code());
            const std::uint32_t heat = tracker_->hotness(*next);
            if (heat < best_heat || (heat == best_heat && next->start() < best.start())) {
                best = *next;
                best_heat = heat;
            }
        }
        return best;
    }

private:
    random_victim<Gen, MaxBlocked> random_;
    const Tracker* tracker_;
};

}  // namespace asreloc
