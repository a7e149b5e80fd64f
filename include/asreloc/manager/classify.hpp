// The vocabulary of a guest fault as the manager sees it: whose is it, and what
// should the embedder do next.
#pragma once

#include <cstdint>

namespace asreloc {

// What a guest access hit.
//   conflict:  a stub page under which the guest has no displaced content: the
//              guest touched the stub itself (claim 1's "attempts to access a
//              region occupied by the first portion").
//   displaced: a page of the guest's that the stub displaced; its content is
//              in the shadow store (claim 11).
//   not_ours:  anything outside the placement: the guest's own fault.
enum class fault_class : std::uint8_t { conflict, displaced, not_ours };

enum class access_kind : std::uint8_t { read, write, execute };

// What handle_fault asks the embedder to do.
//   retry:   the stub moved out of the way; resume the guest at the faulting
//            instruction (if the guest has nothing mapped there either, the
//            retry faults again, outside the placement, and is reflected).
//   emulate: run the instruction through the emulator, which reaches the
//            displaced bytes with relocation_manager::access_displaced.
//   reflect: deliver the fault to the guest's own handler.
enum class fault_action : std::uint8_t { retry, emulate, reflect };

constexpr const char* to_string(fault_action a) noexcept {
    switch (a) {
    case fault_action::retry: return "retry";
    case fault_action::emulate: return "emulate";
    case fault_action::reflect: return "reflect";
    }
    return "unknown";
}

constexpr const char* to_string(access_kind k) noexcept {
    switch (k) {
    case access_kind::read: return "read";
    case access_kind::write: return "write";
    case access_kind::execute: return "execute";
    }
    return "unknown";
}

constexpr const char* to_string(fault_class c) noexcept {
    switch (c) {
    case fault_class::conflict: return "conflict";
    case fault_class::displaced: return "displaced";
    case fault_class::not_ours: return "not_ours";
    }
    return "unknown";
}

}  // namespace asreloc
