// A program linked with -nostdlib -static: no libc, no libstdc++, no heap.
// It instantiates the x86-64 backend over a static array standing in for
// physical memory and exercises it, bare and with its free space indexed (a
// region finder over indexed_page_table), so any hosted dependency of the core
// (an allocation, an exception, RTTI, an iostream) fails the link or the run.
// Exit status 0 means every check held; N > 0 names the failing check.
#include <cstddef>
#include <cstdint>

#include <asreloc/paging/frame_pool.hpp>
#include <asreloc/paging/indexed_page_table.hpp>
#include <asreloc/paging/phys_map.hpp>
#include <asreloc/policy/best_fit_finder.hpp>
#include <asreloc/policy/first_fit_finder.hpp>
#include <asreloc/x86_64/page_table.hpp>

// What the compiler and GSL may call, written here as a kernel would.
extern "C" void* memcpy(void* dst, const void* src, std::size_t n) {
    void* d = dst;
    asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}
extern "C" void* memmove(void* dst, const void* src, std::size_t n) {
    auto* d = static_cast<unsigned char*>(dst);
    const auto* s = static_cast<const unsigned char*>(src);
    if (d < s) return memcpy(dst, src, n);
    while (n-- > 0) *(static_cast<volatile unsigned char*>(d) + n) = s[n];
    return dst;
}
extern "C" void* memset(void* dst, int c, std::size_t n) {
    void* d = dst;
    asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}
extern "C" int memcmp(const void* a, const void* b, std::size_t n) {
    const auto* x = static_cast<const unsigned char*>(a);
    const auto* y = static_cast<const unsigned char*>(b);
    for (std::size_t i = 0; i < n; ++i)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

[[noreturn]] static void exit_with(long status) {
    asm volatile("syscall" : : "a"(60L), "D"(status) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

namespace std {
// GSL's contract violations end here (clang rejects [[noreturn]] on this redeclaration).
void terminate() noexcept { exit_with(100); }
}  // namespace std

namespace {

constexpr std::size_t frame_count = 64;
alignas(4096) std::byte physical_memory[frame_count * 4096];

asreloc::gap_index::node gap_nodes[16];

// The finders over an indexed space: a hole between two mappings, found by
// size; the index follows the maps and unmaps made through it.
int run_indexed(asreloc::frame_pool<frame_count>& frames, const asreloc::offset_phys_map& identity) {
    using namespace asreloc;
    using space_t = x86_64::page_table<frame_pool<frame_count>, offset_phys_map>;
    auto table = space_t::create(frames, identity, x86_64::paging_mode::four_level);
    if (!table) return 20;
    auto space = indexed_page_table<space_t>::over(*table, gap_nodes);
    if (!space) return 21;
    const virt_addr base{0x4000'0000};
    if (!space->map(virt_range::of(base, 4096), phys_addr{0x10'0000}, {}, page_size::size_4k)) return 22;
    if (!space->map(virt_range::of(base + 0x3000, 4096), phys_addr{0x10'0000}, {}, page_size::size_4k)) return 23;
    const indexed_page_table<space_t>* one[] = {&*space};
    const region_request two_pages{.size = 0x2000, .window = virt_range::of(base, 0x10'0000)};
    auto best = best_fit_finder{}.find_free(std::span<const indexed_page_table<space_t>* const>{one}, two_pages);
    if (!best || best->start() != base + 0x1000) return 24;  // the two-page hole, not the large gap above
    auto high = top_down_finder{}.find_free(std::span<const indexed_page_table<space_t>* const>{one}, two_pages);
    if (!high || high->last() != base + 0xf'ffff) return 25;
    if (!space->unmap(virt_range::of(base, 4096)) || !space->unmap(virt_range::of(base + 0x3000, 4096))) return 26;
    auto low = bottom_up_finder{}.find_free(std::span<const indexed_page_table<space_t>* const>{one}, two_pages);
    if (!low || low->start() != base) return 27;
    return space->index().size() == 2 ? 0 : 28;  // the two canonical halves, whole again
}

int run() {
    using namespace asreloc;
    // Physical addresses are the array's own addresses: the identity phys map.
    const offset_phys_map identity{0};
    frame_pool<frame_count> frames{phys_addr{reinterpret_cast<std::uintptr_t>(physical_memory)}, frame_count};
    const auto before = frames.free_count();
    {
        auto space = x86_64::page_table<frame_pool<frame_count>, offset_phys_map>::create(
            frames, identity, x86_64::paging_mode::five_level);
        if (!space) return 1;

        const virt_addr va{0xffff'8000'0020'0000};  // canonical under 57 bits, upper half
        const phys_addr pa{0x1'4000'0000};
        const auto range = virt_range::of(va, 2 * 1024 * 1024);
        if (!space->map(range, pa, attributes{.writable = true}, page_size::size_2m)) return 2;

        auto t = space->translate(va + 0x1234);
        if (!t || t->phys != pa + 0x1234 || t->page.size != page_size::size_2m) return 3;

        // Splitting the 2 MiB page: unmap one 4 KiB page from its middle.
        if (!space->unmap(virt_range::of(va + 0x10'0000, 4096))) return 4;
        if (space->translate(va + 0x10'0000)) return 5;
        auto left = space->translate(va + 0xf'f000);
        if (!left || left->phys != pa + 0xf'f000 || left->page.size != page_size::size_4k) return 6;

        if (!space->unmap(virt_range::of(va, 0x10'0000))) return 7;
        if (!space->unmap(virt_range::of(va + 0x10'1000, 0xf'f000))) return 8;
        if (space->translate(va + 0x1234)) return 9;
        if (!failed_with(space->map(range, phys_addr{0x1001}, {}, page_size::size_2m), error::misaligned)) return 10;
    }
    // Every table page went back when the space was emptied and destroyed.
    if (frames.free_count() != before) return 11;
    return run_indexed(frames, identity);
}

}  // namespace

extern "C" [[noreturn]] void asreloc_nostdlib_main() { exit_with(run()); }

// The ELF entry point: align the stack as the ABI expects at a call.
asm(R"(
    .globl _start
    .type _start, @function
_start:
    xor %ebp, %ebp
    and $-16, %rsp
    call asreloc_nostdlib_main
    hlt
)");
