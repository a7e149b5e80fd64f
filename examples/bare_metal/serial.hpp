// The log: COM1 at 115200 8N1, polled. The test harness reads it line by line.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu.hpp"

namespace bare_metal::serial {

inline constexpr std::uint16_t com1 = 0x3f8;

inline void init() noexcept {
    outb(com1 + 1, 0x00);  // no interrupts
    outb(com1 + 3, 0x80);  // DLAB
    outb(com1 + 0, 0x01);  // divisor 1: 115200 baud
    outb(com1 + 1, 0x00);
    outb(com1 + 3, 0x03);  // 8N1
    outb(com1 + 2, 0xc7);  // FIFO
    outb(com1 + 4, 0x03);
}

inline void put(char c) noexcept {
    while ((inb(com1 + 5) & 0x20) == 0) asm volatile("pause");
    outb(com1, static_cast<std::uint8_t>(c));
}

inline void print(const char* s) noexcept {
    for (; *s; ++s) {
        if (*s == '\n') put('\r');
        put(*s);
    }
}

inline void print_hex(std::uint64_t v) noexcept {
    print("0x");
    bool started = false;
    for (int i = 60; i >= 0; i -= 4) {
        const auto d = static_cast<unsigned>((v >> i) & 0xf);
        if (d == 0 && !started && i != 0) continue;
        started = true;
        put(static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10));
    }
}

inline void print_dec(std::uint64_t v) noexcept {
    char buf[21];
    int n = 0;
    do {
        buf[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) put(buf[--n]);
}

// line("a=", 1, " b=", hex{2}): strings verbatim, integers in decimal,
// hex{v} in hexadecimal; ends the line.
struct hex {
    std::uint64_t value;
};
inline void print_item(const char* s) noexcept { print(s); }
inline void print_item(hex h) noexcept { print_hex(h.value); }
template <class T>
    requires std::is_integral_v<T>
inline void print_item(T v) noexcept {
    print_dec(static_cast<std::uint64_t>(v));
}
template <class... Items>
inline void line(const Items&... items) noexcept {
    (print_item(items), ...);
    print("\n");
}

}  // namespace bare_metal::serial
