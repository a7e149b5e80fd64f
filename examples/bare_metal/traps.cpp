// trap_dispatch: the one C++ entry from entry.S. Probe faults are recorded and
// resumed, a page-fault hook may make an access valid and retry it, the user
// probe comes back through int 0x81; anything else is reported and fails the run.
#include <cstdint>

#include "kernel.hpp"
#include "serial.hpp"

namespace bare_metal {
namespace {

struct probe_state {
    bool armed;
    bool faulted;
    std::uint64_t error_code;
    std::uint64_t cr2;
    std::uint64_t fetch_target;
};
volatile probe_state probe{};
page_fault_hook fault_hook = nullptr;

bool at_probe_instruction(const trap_frame& f) noexcept {
    const auto rip = f.rip;
    return rip == reinterpret_cast<std::uint64_t>(probe_read_insn) ||
           rip == reinterpret_cast<std::uint64_t>(probe_write_insn) ||
           (probe.fetch_target != 0 && rip == probe.fetch_target);
}

void record(std::uint64_t error_code, std::uint64_t cr2) noexcept {
    probe.faulted = true;
    probe.error_code = error_code;
    probe.cr2 = cr2;
    probe.armed = false;
}

[[noreturn]] void report(const trap_frame& f, std::uint64_t cr2) noexcept {
    serial::line("exception: vector=", f.vector, " error=", serial::hex{f.error_code}, " rip=",
                 serial::hex{f.rip}, " cs=", serial::hex{f.cs}, " cr2=", serial::hex{cr2}, " rsp=",
                 serial::hex{f.rsp});
    fail("unexpected exception");
}

}  // namespace

void set_page_fault_hook(page_fault_hook h) noexcept { fault_hook = h; }

void arm_probe(std::uint64_t fetch_target) noexcept {
    probe.faulted = false;
    probe.error_code = 0;
    probe.cr2 = 0;
    probe.fetch_target = fetch_target;
    asm volatile("" ::: "memory");
    probe.armed = true;
}

probe_fault disarm_probe() noexcept {
    probe.armed = false;
    asm volatile("" ::: "memory");
    return {probe.faulted, probe.error_code, probe.cr2};
}

void fail(const char* why) noexcept {
    serial::line("FAIL: ", why);
    qemu_exit(exit_code::fail);
}

}  // namespace bare_metal

using namespace bare_metal;

extern "C" void trap_dispatch(trap_frame* frame) {
    trap_frame& f = *frame;
    const std::uint64_t cr2 = f.vector == vector_page_fault ? read_cr2() : 0;
    if (f.vector == vector_page_fault) {
        if (probe.armed && f.from_user()) {
            record(f.error_code, cr2);
            return_to_kernel(0);
        }
        if (probe.armed && at_probe_instruction(f)) {
            record(f.error_code, cr2);
            f.rip = reinterpret_cast<std::uint64_t>(probe_landing);
            return;
        }
        if (fault_hook != nullptr && fault_hook(f, cr2)) return;
    }
    if (f.vector == vector_user_return && f.from_user()) return_to_kernel(f.rax);
    report(f, cr2);
}
