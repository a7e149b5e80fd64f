// Host-side check of the MOV decoder against encodings produced by GNU as.
#include <catch2/catch.hpp>

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "mov_decoder.hpp"

namespace {

using bare_metal::decode_mov;
using bare_metal::mov_access;
using kind = mov_access::kind;
enum reg : std::uint8_t { rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15 };

mov_access decode(std::initializer_list<std::uint8_t> bytes) {
    const std::vector<std::uint8_t> v(bytes);
    const auto r = decode_mov(v.data(), v.size());
    REQUIRE(r.ok);
    CHECK(r.access.length == v.size());
    return r.access;
}

bool rejects(std::initializer_list<std::uint8_t> bytes) {
    const std::vector<std::uint8_t> v(bytes);
    return !decode_mov(v.data(), v.size()).ok;
}

}  // namespace

TEST_CASE("loads through a base register with no, 8-bit and 32-bit displacement decode") {
    auto m = decode({0x48, 0x8b, 0x07});  // mov (%rdi),%rax
    CHECK((m.what == kind::load && m.width == 8 && m.reg == rax && m.base == rdi && m.displacement == 0));
    m = decode({0x48, 0x8b, 0x4e, 0x08});  // mov 0x8(%rsi),%rcx
    CHECK((m.reg == rcx && m.base == rsi && m.displacement == 8));
    m = decode({0x4c, 0x8b, 0x4d, 0x80});  // mov -0x80(%rbp),%r9
    CHECK((m.reg == r9 && m.base == rbp && m.displacement == -0x80));
    m = decode({0x41, 0x8b, 0x84, 0x24, 0x45, 0x23, 0x01, 0x00});  // mov 0x12345(%r12),%eax
    CHECK((m.width == 4 && m.reg == rax && m.base == r12 && !m.has_index && m.displacement == 0x12345));
}

TEST_CASE("register and immediate stores decode with their widths") {
    auto m = decode({0x48, 0x89, 0x13});  // mov %rdx,(%rbx)
    CHECK((m.what == kind::store_register && m.reg == rdx && m.base == rbx));
    m = decode({0x4c, 0x89, 0x7c, 0x24, 0x40});  // mov %r15,0x40(%rsp)
    CHECK((m.reg == r15 && m.base == rsp && m.displacement == 0x40));
    m = decode({0x41, 0x89, 0x75, 0x00});  // mov %esi,0x0(%r13)
    CHECK((m.width == 4 && m.reg == rsi && m.base == r13));
    m = decode({0x48, 0xc7, 0x47, 0x10, 0xfe, 0xff, 0xff, 0xff});  // movq $-2,0x10(%rdi)
    CHECK((m.what == kind::store_immediate && m.width == 8 && m.immediate == -2 && m.base == rdi && m.displacement == 0x10));
    m = decode({0xc7, 0x00, 0xff, 0xff, 0xff, 0x7f});  // movl $0x7fffffff,(%rax)
    CHECK((m.width == 4 && m.immediate == 0x7fffffff && m.base == rax));
    m = decode({0x48, 0x89, 0x04, 0x24});  // mov %rax,(%rsp)
    CHECK((m.reg == rax && m.base == rsp && !m.has_index));
}

TEST_CASE("scaled index addressing computes the address the CPU would") {
    auto m = decode({0x48, 0x8b, 0x14, 0xc8});  // mov (%rax,%rcx,8),%rdx
    CHECK((m.reg == rdx && m.base == rax && m.has_index && m.index == rcx && m.scale == 8));
    m = decode({0x4f, 0x8b, 0x54, 0x98, 0x20});  // mov 0x20(%r8,%r11,4),%r10
    CHECK((m.reg == r10 && m.base == r8 && m.index == r11 && m.scale == 4 && m.displacement == 0x20));
    std::uint64_t regs[16] = {};
    regs[r8] = 0x1000;
    regs[r11] = 3;
    CHECK(m.address(regs) == 0x1000 + 12 + 0x20);
}

TEST_CASE("forms the monitor does not emulate are refused, not guessed") {
    CHECK(rejects({0x48, 0x8b, 0x05, 0, 0, 0, 0}));  // RIP-relative
    CHECK(rejects({0x48, 0x89, 0xc3}));              // register to register
    CHECK(rejects({0x48, 0x8b}));                    // truncated
    CHECK(rejects({0x48, 0x8b, 0x4e}));              // truncated displacement
    CHECK(rejects({0x0f, 0xb6, 0x07}));              // movzbl
    CHECK(rejects({0x48, 0xc7, 0x4f, 0x10, 0, 0, 0, 0}));  // C7 /1 is not MOV
}
