// The legacy timer: 8259 PICs remapped above the exceptions and the 8254 PIT
// on IRQ 0. Enough to give the demo a periodic interrupt under QEMU TCG
// without the LAPIC's calibration.
#pragma once

#include <cstdint>

#include "cpu.hpp"

namespace bare_metal {

inline constexpr std::uint8_t vector_timer = 0x20;

// Master PIC at vectors 0x20..0x27, slave at 0x28..0x2f, everything masked
// except IRQ 0; PIT channel 0 in rate-generator mode at `hz`.
inline void start_timer(std::uint32_t hz) noexcept {
    outb(0x20, 0x11);  // ICW1: edge, cascade, ICW4 follows
    outb(0xa0, 0x11);
    outb(0x21, vector_timer);
    outb(0xa1, vector_timer + 8);
    outb(0x21, 0x04);  // ICW3: slave on IRQ 2
    outb(0xa1, 0x02);
    outb(0x21, 0x01);  // ICW4: 8086 mode
    outb(0xa1, 0x01);
    outb(0x21, 0xfe);  // only IRQ 0
    outb(0xa1, 0xff);
    const std::uint32_t divisor = 1193182 / hz;
    outb(0x43, 0x34);  // channel 0, lobyte/hibyte, mode 2
    outb(0x40, static_cast<std::uint8_t>(divisor));
    outb(0x40, static_cast<std::uint8_t>(divisor >> 8));
}

inline void end_of_interrupt() noexcept { outb(0x20, 0x20); }

inline void stop_timer() noexcept { outb(0x21, 0xff); }

}  // namespace bare_metal
