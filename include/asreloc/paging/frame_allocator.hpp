// Where page-table pages come from. A concept of two functions: the kernel or
// VMM already has a physical memory manager, and adapts it in a few lines.
#pragma once

#include <concepts>

#include "asreloc/core/address.hpp"
#include "asreloc/core/result.hpp"

namespace asreloc {

// allocate_frame(): a 4 KiB aligned physical frame that nothing else uses, or
//   error::out_of_frames. Its content is unspecified (the backend zeroes it).
// deallocate_frame(f): give back a frame that allocate_frame returned.
// Neither may allocate from a heap that could call back into the page table.
template <class A>
concept frame_allocator = requires(A& a, phys_addr f) {
    { a.allocate_frame() } -> std::same_as<result<phys_addr>>;
    a.deallocate_frame(f);
};

}  // namespace asreloc
