// The test a kernel image runs: one per image (see CMakeLists.txt). Each ends
// the run through isa-debug-exit.
#pragma once

#include <cstdint>

#include "memory.hpp"

namespace bare_metal {

// `seed` drives every random choice; the test prints it first.
[[noreturn]] void run_kernel_test(const physical_layout& layout, std::uint64_t seed) noexcept;

}  // namespace bare_metal
