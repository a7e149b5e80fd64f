// Relocation through the manager (relocate_to, one guest space plus the
// monitor space, eight slot fixups, no TLB to flush) beside the stores it
// cannot avoid, in the same tables:
//   free path, one move between two free placements A <-> B:
//     bare_stores      - per space, the stub's PTEs written at the target and
//                        cleared at the source, and the eight fixup slots;
//     checked_stores   - no goal: the same after a walk from the root per
//                        space and a check that the target is free and the
//                        source mapped (the floor without cached pointers);
//     backend_moves    - no goal: the same through the backend, one
//                        move_4k_pages per space, and the fixup slots stored
//                        inline: what the manager adds over its backend;
//   free path with the x86-64 stub tables instead of the slots (16 and
//   64 KiB: the tables need 4 pages), relocate-free-x86:
//     bare_stores      - the same PTE stores, and the writes stub_fixups makes
//                        (256 gate offsets, the TSS descriptor base, the
//                        GDTR/IDTR images, RSP0 and IST1) as a plain loop;
//   victim path, one round trip A -> V -> A over N guest pages at V:
//     memcpy_plus_free - memcpy of the displaced bytes both ways plus two free
//                        moves through the manager (the goal's yardstick);
//     memcpy_plus_bare_stores - the same copies plus the bare stores of both
//                        moves (guest PTEs at V saved and put back).
// Each subject checks the outcome once (kind, pages displaced/restored,
// content back in the guest's frames) before timing.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "support/bench_context.hpp"
#include "support/manager_world.hpp"

namespace asreloc::bench {
namespace {

constexpr std::size_t stub_pages_of[] = {1, 4, 16};  // 4 KiB, 16 KiB, 64 KiB

template <class World>
bool setup(benchmark::State& st, World& w) {
    if (auto failed = w.setup()) {
        st.SkipWithError(failed->c_str());
        return false;
    }
    return true;
}

template <class World>
bool move(benchmark::State& st, World& w, virt_range to, relocation_kind kind) {
    auto r = w.manager().relocate_to(to);
    if (!r || r->kind != kind) {
        st.SkipWithError(r ? "the move was not of the expected kind"
                           : (std::string("relocate_to failed: ") + to_string(r.error_code())).c_str());
        return false;
    }
    return true;
}

// The timed loop of the free path: the stub moves from A to `away` and back,
// one move per iteration.
template <class World>
void free_moves_between(benchmark::State& st, World& w, virt_range away) {
    bool at_a = true;
    for (auto _ : st) {
        if (!move(st, w, at_a ? away : w.a(), relocation_kind::free)) break;
        at_a = !at_a;
    }
}

// The stub's pages as the manager maps them: supervisor-only 4 KiB pages.
std::vector<stub_page> stub_pages(const manager_world& w) {
    std::vector<stub_page> out;
    for (phys_addr f : w.stub_frames()) out.push_back(stub_page{f, supervisor_only(read_write)});
    return out;
}
// The same pages as the leaf entries the backend writes for them.
std::vector<std::uint64_t> stub_leaves(const manager_world& w) {
    std::vector<std::uint64_t> out;
    for (const stub_page& p : stub_pages(w)) out.push_back(x86_64::make_leaf(1, p.frame, p.attrs).raw());
    return out;
}

// The stores of one free move from `from` to `to`, in both spaces' tables.
struct bare_mover {
    std::uint64_t* guest_pt;
    std::uint64_t* monitor_pt;
    std::vector<std::uint64_t> leaves;
    std::array<std::uint64_t, manager_world::fixup_slots>* fixed;

    void pte_stores(virt_range from, virt_range to) const {
        const unsigned f = x86_64::table_index(from.start().value(), 1), t = x86_64::table_index(to.start().value(), 1);
        for (std::size_t i = 0; i < leaves.size(); ++i) {
            guest_pt[t + i] = leaves[i];
            monitor_pt[t + i] = leaves[i];
        }
        for (std::size_t i = 0; i < leaves.size(); ++i) {
            guest_pt[f + i] = 0;
            monitor_pt[f + i] = 0;
        }
    }
    bool operator()(virt_range from, virt_range to) const {
        pte_stores(from, to);
        for (auto& slot : *fixed) slot = slot - from.start().value() + to.start().value();
        return true;
    }
};

// The same PTE stores, then the writes x86_64::stub_fixups makes to the stub
// tables the world built, as a plain loop that knows which values move.
struct bare_x86_mover {
    bare_mover ptes;
    x86_64::stub_tables* tables;

    bool operator()(virt_range from, virt_range to) const {
        ptes.pte_stores(from, to);
        const std::uint64_t delta = to.start().value() - from.start().value();
        x86_64::stub_tables& t = *tables;
        for (x86_64::idt_gate& g : t.idt_gates) g.set_offset(g.offset() + delta);
        t.gdt.tss.set_base(t.gdt.tss.base() + delta);
        t.gdtr.base += delta;
        t.idtr.base += delta;
        t.tss.rsp[0] += delta;
        t.tss.ist[0] += delta;
        return true;
    }
};

// The tables as building them at `at` would make them (the gates, the stacks
// and the table pointers checked; the rest never moves).
bool tables_built_for(manager_world& w, virt_addr at) {
    const x86_64::stub_tables& t = w.tables();
    x86_64::stub_tables built{};
    w.build_x86_tables(built, at);
    const std::uint64_t rsp0 = t.tss.rsp[0], ist1 = t.tss.ist[0];
    const std::uint64_t built_rsp0 = built.tss.rsp[0], built_ist1 = built.tss.ist[0];
    return t.idt_gates == built.idt_gates && t.gdt.tss.base() == built.gdt.tss.base() && t.gdtr == built.gdtr &&
           t.idtr == built.idtr && rsp0 == built_rsp0 && ist1 == built_ist1;
}

// The least a move can do without keeping leaf-table pointers from one move
// to the next: per space, a walk from the root to the page table (one load
// per level, present bits checked), the target entries checked free and the
// source entries checked present, then the bare stores. No manager.
struct checked_mover {
    const offset_phys_map* memory;
    std::uint64_t guest_root, monitor_root;
    std::vector<std::uint64_t> leaves;
    std::array<std::uint64_t, manager_world::fixup_slots>* fixed;

    std::uint64_t* page_table(std::uint64_t root, std::uint64_t va) const {
        auto* table = reinterpret_cast<std::uint64_t*>(memory->to_virt(phys_addr{root}));
        for (unsigned level = 4; level > 1; --level) {
            const std::uint64_t e = table[(va >> (12 + 9 * (level - 1))) & 511];
            if ((e & 1) == 0 || (level <= 3 && (e & (std::uint64_t{1} << 7)) != 0)) return nullptr;
            table = reinterpret_cast<std::uint64_t*>(memory->to_virt(phys_addr{e & 0x000f'ffff'ffff'f000}));
        }
        return table;
    }
    // A and B share the page table, as in the bare mover: one walk per space.
    bool operator()(virt_range from, virt_range to) const {
        const unsigned f = x86_64::table_index(from.start().value(), 1), t = x86_64::table_index(to.start().value(), 1);
        for (const std::uint64_t root : {guest_root, monitor_root}) {
            std::uint64_t* pt = page_table(root, to.start().value());
            if (pt == nullptr) return false;
            std::uint64_t any_at_target = 0, all_at_source = ~std::uint64_t{0};
            for (std::size_t i = 0; i < leaves.size(); ++i) {
                any_at_target |= pt[t + i];
                all_at_source &= pt[f + i];
            }
            if ((any_at_target & 1) != 0 || (all_at_source & 1) == 0) return false;
            for (std::size_t i = 0; i < leaves.size(); ++i) pt[t + i] = leaves[i];
            for (std::size_t i = 0; i < leaves.size(); ++i) pt[f + i] = 0;
        }
        for (auto& slot : *fixed) slot = slot - from.start().value() + to.start().value();
        return true;
    }
};

// The stub's move done by the backend alone: one move_4k_pages per space
// (every check of the API, no manager), then the eight slots.
struct backend_mover {
    space* guest;
    space* monitor;
    std::vector<stub_page> pages;
    std::array<std::uint64_t, manager_world::fixup_slots>* fixed;

    bool operator()(virt_range from, virt_range to) const {
        const auto leaf_of = [this](std::uint64_t i) -> const stub_page& { return pages[i]; };
        for (space* s : {guest, monitor})
            if (!s->move_4k_pages(from, to, leaf_of)) return false;
        for (auto& slot : *fixed) slot = slot - from.start().value() + to.start().value();
        return true;
    }
};

bare_mover mover_of(manager_world& w) {
    return bare_mover{w.page_table_of(w.guest(), w.a().start()), w.page_table_of(w.monitor(), w.a().start()),
                      stub_leaves(w), &w.fixed()};
}

// The timed loop of a subject that moves the stub itself, A to B and back,
// then a check that the tables map it where the last move put it.
template <class Mover>
void own_moves_between(benchmark::State& st, manager_world& w, const Mover& mv, const char* what) {
    bool at_a = true;
    for (auto _ : st) {
        if (!(at_a ? mv(w.a(), w.b()) : mv(w.b(), w.a()))) {
            st.SkipWithError((std::string(what) + ": a move found the tables not as expected").c_str());
            return;
        }
        at_a = !at_a;
        benchmark::ClobberMemory();
    }
    const auto t = w.guest().translate(at_a ? w.a().start() : w.b().start());
    if (!t || t->phys != w.stub_frames()[0]) st.SkipWithError((std::string(what) + " did not move the stub").c_str());
}

void copy_pages(const manager_world& w, std::span<const phys_addr> frames, std::vector<std::byte>& buffer,
                bool to_buffer) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
        std::byte* page = w.memory().to_virt(frames[i]);
        if (to_buffer) std::memcpy(buffer.data() + i * page_bytes, page, page_bytes);
        else std::memcpy(page, buffer.data() + i * page_bytes, page_bytes);
    }
}

bool guest_content_intact(const manager_world& w) {
    for (std::size_t i = 0; i < w.pages(); ++i) {
        const std::byte* p = w.memory().to_virt(w.guest_frames()[i]);
        for (std::size_t k = 0; k < page_bytes; ++k)
            if (p[k] != static_cast<std::byte>(i)) return false;
    }
    return true;
}

void register_free(bench_context& ctx, std::size_t pages) {
    const std::string c = "relocate-free/" + size_label(pages * page_bytes);
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        free_moves_between(st, w, w.b());
        st.counters["fixups"] = manager_world::fixup_slots;
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/bare_stores").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        own_moves_between(st, w, mover_of(w), "bare_stores");
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/checked_stores").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        const checked_mover mv{&w.memory(), w.guest().root().value(), w.monitor().root().value(), stub_leaves(w),
                               &w.fixed()};
        own_moves_between(st, w, mv, "checked_stores");
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/backend_moves").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        const backend_mover mv{&w.guest(), &w.monitor(), stub_pages(w), &w.fixed()};
        own_moves_between(st, w, mv, "backend_moves");
    })->Unit(benchmark::kNanosecond);
}

// The free path again, the stub carrying the x86-64 tables (every gate
// present) instead of the eight slots: the same PTE stores, the fixup writes a
// real stub needs.
void register_free_x86(bench_context& ctx, std::size_t pages) {
    const std::string c = "relocate-free-x86/" + size_label(pages * page_bytes);
    const auto at_end = [](benchmark::State& st, manager_world& w, virt_addr at) {
        if (!tables_built_for(w, at)) st.SkipWithError("the stub tables did not follow the stub");
    };
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [&ctx, pages, at_end](benchmark::State& st) {
        manager_world w(ctx, pages, stub_fixups_kind::x86_tables);
        if (!setup(st, w)) return;
        free_moves_between(st, w, w.b());
        at_end(st, w, w.manager().placement()->start());
        st.counters["fixups"] = static_cast<double>(w.fixup_count());
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/bare_stores").c_str(), [&ctx, pages, at_end](benchmark::State& st) {
        manager_world w(ctx, pages, stub_fixups_kind::x86_tables);
        if (!setup(st, w)) return;
        const bare_x86_mover mv{mover_of(w), &w.tables()};
        own_moves_between(st, w, mv, "bare_stores");
        at_end(st, w, st.iterations() % 2 == 0 ? w.a().start() : w.b().start());
    })->Unit(benchmark::kNanosecond);
}

void register_victim(bench_context& ctx, std::size_t pages) {
    const std::string c = "relocate-victim/" + size_label(pages * page_bytes);
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        for (auto _ : st) {
            if (!move(st, w, w.v(), relocation_kind::victim)) break;
            if (!move(st, w, w.a(), relocation_kind::free)) break;
        }
        if (!guest_content_intact(w)) st.SkipWithError("the guest's content did not come back");
        const auto stats = w.manager().stats();
        st.counters["displaced_per_trip"] =
            static_cast<double>(stats.pages_displaced) / static_cast<double>(stats.victim_relocations);
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/memcpy_plus_free").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        std::vector<std::byte> buffer(pages * page_bytes);
        for (auto _ : st) {
            copy_pages(w, w.guest_frames(), buffer, true);
            if (!move(st, w, w.b(), relocation_kind::free)) break;
            if (!move(st, w, w.a(), relocation_kind::free)) break;
            copy_pages(w, w.guest_frames(), buffer, false);
            benchmark::ClobberMemory();
        }
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/memcpy_plus_bare_stores").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        const bare_mover mv = mover_of(w);
        std::vector<std::byte> buffer(pages * page_bytes);
        std::vector<std::uint64_t> saved(pages);
        const unsigned v = x86_64::table_index(w.v().start().value(), 1);
        for (auto _ : st) {
            copy_pages(w, w.guest_frames(), buffer, true);
            for (std::size_t i = 0; i < pages; ++i) saved[i] = mv.guest_pt[v + i];
            mv(w.a(), w.v());
            mv(w.v(), w.a());
            for (std::size_t i = 0; i < pages; ++i) mv.guest_pt[v + i] = saved[i];
            copy_pages(w, w.guest_frames(), buffer, false);
            benchmark::ClobberMemory();
        }
        if (!guest_content_intact(w)) st.SkipWithError("the guest's content did not come back");
    })->Unit(benchmark::kNanosecond);
}

// The free path between placements 4 GiB apart (no goal): each move builds
// the target's page directory and page table in both spaces and gives the
// source's back, as a stub hopping to a range nothing was ever mapped in
// does. Beside the near move of the same run, for the ratio.
void register_free_far(bench_context& ctx, std::size_t pages) {
    const std::string c = "relocate-free-far/" + size_label(pages * page_bytes);
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        free_moves_between(st, w, virt_range::of(w.a().start() + (std::uint64_t{4} << 30), pages * page_bytes));
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/near_move").c_str(), [&ctx, pages](benchmark::State& st) {
        manager_world w(ctx, pages);
        if (!setup(st, w)) return;
        free_moves_between(st, w, w.b());
    })->Unit(benchmark::kNanosecond);
}

// The free path with the manager working on indexed spaces (the index kept in
// step with the stub's maps and unmaps) beside the same over the bare tables.
template <bool Indexed>
void free_moves(benchmark::State& st, bench_context& ctx, std::size_t pages) {
    basic_manager_world<Indexed> w(ctx, pages);
    if (!setup(st, w)) return;
    free_moves_between(st, w, w.b());
}

void register_free_indexed(bench_context& ctx, std::size_t pages) {
    const std::string c = "relocate-free-indexed/" + size_label(pages * page_bytes);
    benchmark::RegisterBenchmark((c + "/asreloc").c_str(), [&ctx, pages](benchmark::State& st) {
        free_moves<true>(st, ctx, pages);
    })->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((c + "/bare_tables").c_str(), [&ctx, pages](benchmark::State& st) {
        free_moves<false>(st, ctx, pages);
    })->Unit(benchmark::kNanosecond);
}

}  // namespace

void register_relocation(bench_context& ctx) {
    for (const std::size_t pages : stub_pages_of) register_free(ctx, pages);
    for (const std::size_t pages : stub_pages_of)
        if (pages >= 4) register_free_x86(ctx, pages);
    for (const std::size_t pages : stub_pages_of) register_free_far(ctx, pages);
    for (const std::size_t pages : stub_pages_of) register_free_indexed(ctx, pages);
    for (const std::size_t pages : stub_pages_of) register_victim(ctx, pages);
}

}  // namespace asreloc::bench
