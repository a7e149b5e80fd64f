// What a consumer project builds: the x86-64 backend over memory it owns and a
// hosted shadow store. Exit status 0 when the package works as documented.
#include <array>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <asreloc/asreloc.hpp>
#include <asreloc/hosted/heap_shadow_store.hpp>

int main() {
    using namespace asreloc;
    constexpr std::size_t frames = 16;
    struct free_deleter {
        void operator()(void* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<void, free_deleter> memory{std::aligned_alloc(page_bytes, frames * page_bytes)};
    const auto base = reinterpret_cast<std::uintptr_t>(memory.get());
    frame_pool<frames> pool{phys_addr{base}, frames};
    const offset_phys_map identity{0};

    auto space = x86_64::page_table<frame_pool<frames>, offset_phys_map>::create(pool, identity,
                                                                                 x86_64::paging_mode::four_level);
    if (!space) return 1;
    const virt_addr va{0x7000'0000};
    if (!space->map(virt_range::of(va, page_bytes), phys_addr{0x9000}, read_write, page_size::size_4k)) return 2;
    auto t = space->translate(va + 8);
    if (!t || t->phys != phys_addr{0x9008}) return 3;

    hosted::heap_shadow_store store{4};
    std::array<std::byte, page_bytes> page{};
    page[7] = std::byte{42};
    if (!store.insert({0, va}, t->page, page)) return 4;
    std::array<std::byte, 1> out{};
    if (!store.read({0, va}, 7, out) || out[0] != std::byte{42}) return 5;

    std::puts("asreloc consumer: ok");
    return 0;
}
