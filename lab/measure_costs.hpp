// Measures the build-dependent entries of the cost table in this process, on
// the same code the replay runs: a 4 KiB copy, a page walk of the x86-64
// backend (translate), and a stub move through the relocation manager
// (relocate_to between two free ranges), per stub page, an accessed-bit
// harvest per page. The trap and switch entries stay the cited ones.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lab/costs.hpp"
#include "lab/replay.hpp"

namespace asreloc::lab {

namespace measure_detail {

// The fastest of seven runs: the machine is shared, and interference only
// ever adds time, so the minimum is the best estimate of the cost itself.
template <class Body>
double fastest_ns_per_op(std::uint64_t ops, Body&& body) {
    std::vector<double> runs;
    for (int run = 0; run < 7; ++run) {
        const auto t0 = std::chrono::steady_clock::now();
        body(ops);
        const auto t1 = std::chrono::steady_clock::now();
        runs.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(ops));
    }
    return *std::min_element(runs.begin(), runs.end());
}

inline void clobber(void* p) { asm volatile("" : : "g"(p) : "memory"); }

}  // namespace measure_detail

inline void measure_costs(host_memory& memory, std::uint64_t stub_pages, cost_table& table, const char* build) {
    using namespace measure_detail;
    using replay_detail::space;
    const std::string tag = std::string("measured in this build (") + build + ", asreloc-lab, fastest of 7 runs)";

    std::vector<std::byte> a(page_bytes, std::byte{1}), b(page_bytes);
    table.copy_page = {fastest_ns_per_op(20000, [&](std::uint64_t n) {
                           for (std::uint64_t i = 0; i < n; ++i) {
                               std::memcpy(b.data(), a.data(), page_bytes);
                               clobber(b.data());
                           }
                       }),
                       tag};

    const offset_phys_map map = memory.map();
    auto guest = space::create(memory, map, x86_64::paging_mode::four_level);
    auto monitor = space::create(memory, map, x86_64::paging_mode::four_level);
    if (!guest || !monitor) return;
    const std::uint64_t base = 0x7f0000000000, pages = 4096;
    if (auto m = guest->map(virt_range::of(virt_addr{base}, pages * page_bytes), memory.guest_frame(0), user_read_write,
                            page_size::size_4k);
        m)
        m->ignore();
    pcg32 gen(7);
    table.walk = {fastest_ns_per_op(100000, [&](std::uint64_t n) {
                      std::uint64_t sum = 0;
                      for (std::uint64_t i = 0; i < n; ++i) {
                          auto t = guest->translate(virt_addr{base + (gen() % pages) * page_bytes});
                          if (t) sum += t->phys.value();
                      }
                      clobber(&sum);
                  }),
                  tag};

    // An accessed-bit harvest of the whole mapping, per page.
    accessed_bit_tracker<> harvester(hotness_config{.granularity = 4 * page_bytes});
    table.harvest_page = {fastest_ns_per_op(pages * 20, [&](std::uint64_t n) {
                              for (std::uint64_t i = 0; i < n / pages; ++i) {
                                  auto f = harvester.sample(*guest, virt_range::of(virt_addr{base}, pages * page_bytes));
                                  if (f) f->ignore();
                              }
                          }),
                          tag};

    // A move of the stub between two free ranges, per stub page (fixups included).
    std::vector<page_slot> slots(stub_pages);
    std::vector<shadow_entry> index(stub_pages);
    pool_shadow_store store(slots, index);
    trap_count_tracker<> tracker;
    random_victim<pcg32> victims(gen);
    no_tlb tlb;
    replay_detail::hop_log log;
    const bottom_up_finder finder{};
    relocation_manager<space, bottom_up_finder, random_victim<pcg32>, pool_shadow_store, trap_count_tracker<>, no_tlb,
                       offset_phys_map, replay_detail::hop_sink, replay_detail::lab_limits>
        manager(*monitor, finder, victims, store, tracker, tlb, map, {}, replay_detail::hop_sink{&log});
    if (!manager.add_guest_space(*guest)) return;
    // The lab's real stub: moving it runs the x86-64 fixups (IDT, GDT, TSS, GDTR/IDTR) too.
    replay_detail::lab_stub stub(memory, stub_pages, x86_64::paging_mode::four_level);
    if (!stub.complete() || !manager.add_fixups(stub.fixups())) return;
    std::array<stub_page, max_stub_pages> stub_list{};
    for (std::size_t i = 0; i < stub.frames().size(); ++i) stub_list[i] = {stub.frames()[i], read_write};
    if (manager.place({std::span<const stub_page>(stub_list.data(), stub_pages), replay_detail::lab_stub::built_for})) {
        const std::uint64_t size = stub_pages * page_bytes;
        const virt_range spots[2] = {virt_range::of(virt_addr{0x100000000}, size), virt_range::of(virt_addr{0x200000000}, size)};
        std::uint64_t k = 0;
        const double per_move = fastest_ns_per_op(2000, [&](std::uint64_t n) {
            for (std::uint64_t i = 0; i < n; ++i) (void)manager.relocate_to(spots[k++ % 2]);
        });
        table.remap_page = {per_move / static_cast<double>(stub_pages), tag};
    }
    (void)manager.remove_guest_space(0);
}

}  // namespace asreloc::lab
