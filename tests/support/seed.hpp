// The seed of a randomized test: ASRELOC_SEED when set (to replay a failure),
// else a fresh one. Tests print it with INFO so a failure names it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>

namespace asreloc::test {

inline std::uint64_t test_seed() {
    if (const char* s = std::getenv("ASRELOC_SEED")) return std::strtoull(s, nullptr, 0);
    return (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
}

}  // namespace asreloc::test
