// The part of the stub written in C++: asreloc's trap_router dispatch for the
// fast path, and the fast service itself. Both are compiled into the stub's
// code section (.stub_text) and run only as the copy in the stub's code page,
// in the guest space, where nothing of the kernel image is mapped. So this
// file is built position-independent (-fpie, no jump tables) and everything
// it calls is inlined (flatten): the copy must not reach outside the stub.
// GSL contracts, which would call std::terminate in the kernel image, end in
// a trap here instead (a #UD in the stub, which the monitor reports).
#include <gsl/assert>
#undef Expects
#define Expects(cond) ((cond) ? static_cast<void>(0) : __builtin_trap())

#include <cstdint>

#include <asreloc/manager/trap_routing.hpp>

#include "stub.hpp"

// rdi = the router (in the stub's data), rsi = the trap_frame on the stub's
// stack. Returns the trap_outcome: resume the guest, or reflect (which the
// entry code hands to the monitor).
extern "C" [[gnu::section(".stub_text"), gnu::flatten]] std::uint8_t stub_route_fast(
    asreloc::trap_router* router, asreloc::trap_frame* frame) noexcept {
    return static_cast<std::uint8_t>(router->dispatch(*frame));
}

// The fast route of int 0x80: the guest's "service" answers rax + 1 without
// leaving the guest space.
extern "C" [[gnu::section(".stub_text"), gnu::flatten]] asreloc::trap_disposition stub_fast_service(
    void*, asreloc::trap_frame& frame) noexcept {
    bare_metal::frame_of(frame).rax += 1;
    return asreloc::trap_disposition::resume_guest;
}
