// kmain: serial, memory map, descriptors, a self-check of the fault path,
// then the test this kernel was built for.
#include <cstdint>

#include "kernel.hpp"
#include "memory.hpp"
#include "serial.hpp"
#include "tests.hpp"

extern "C" void run_constructors();

namespace bare_metal {
namespace {

// The probe machinery itself must report what the SDM says before anything
// is judged with it: a read of an address the boot tables leave unmapped is
// a not-present supervisor read, error code 0, CR2 the address.
void check_probe_path() noexcept {
    constexpr std::uint64_t unmapped = 0x0000000100000000;  // boot tables map only the first 1 GiB
    arm_probe(0);
    (void)probe_read(unmapped);
    const auto f = disarm_probe();
    if (!f.faulted || f.error_code != 0 || f.cr2 != unmapped) fail("the probe path does not see a not-present read");
    serial::line("boot: probe path ok (error=", serial::hex{f.error_code}, " cr2=", serial::hex{f.cr2}, ")");
}

}  // namespace
}  // namespace bare_metal

extern "C" [[noreturn]] void kmain(std::uint32_t multiboot_info, std::uint32_t magic) {
    using namespace bare_metal;
    serial::init();
    run_constructors();
    serial::line("boot: asreloc bare-metal kernel, ", (read_cr4() & cr4_la57) ? "5-level" : "4-level",
                 " paging, CR0.WP=", (read_cr0() & cr0_wp) ? 1 : 0);
    if (magic != 0x2BADB002) fail("not booted by a Multiboot loader");
    install_descriptors();
    const auto layout = read_memory_map(multiboot_info);
    check_probe_path();
    const auto seed = read_boot_seed(multiboot_info);
    run_kernel_test(layout, seed.given ? seed.value : read_tsc());
}
