// What a freestanding C++ program still needs: the memory functions the
// compiler may call, std::terminate (GSL contracts end there), and the
// constructors of globals.
#include <cstddef>
#include <cstdint>

#include "kernel.hpp"
#include "serial.hpp"

extern "C" {

// rep movsb / rep stosb rather than loops: the compiler would turn a copy
// loop inside memcpy back into a call to memcpy.
void* memcpy(void* dst, const void* src, std::size_t n) {
    void* d = dst;
    asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void* memmove(void* dst, const void* src, std::size_t n) {
    if (reinterpret_cast<std::uintptr_t>(dst) - reinterpret_cast<std::uintptr_t>(src) >= n) return memcpy(dst, src, n);
    auto* d = static_cast<unsigned char*>(dst) + n - 1;
    const auto* s = static_cast<const unsigned char*>(src) + n - 1;
    asm volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return dst;
}

void* memset(void* dst, int c, std::size_t n) {
    void* d = dst;
    asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

int memcmp(const void* a, const void* b, std::size_t n) {
    const auto* x = static_cast<const unsigned char*>(a);
    const auto* y = static_cast<const unsigned char*>(b);
    for (; n--; ++x, ++y)
        if (*x != *y) return *x < *y ? -1 : 1;
    return 0;
}

void __cxa_pure_virtual() { bare_metal::fail("pure virtual call"); }

using constructor = void (*)();
extern constructor init_array_start[], init_array_end[];
void run_constructors() {
    for (constructor* c = init_array_start; c != init_array_end; ++c) (*c)();
}

}  // extern "C"

namespace std {
// Not [[noreturn]] here: clang 14 rejects the redeclaration (toolchain notes).
void terminate() noexcept { bare_metal::fail("std::terminate (contract violation)"); }
}  // namespace std
