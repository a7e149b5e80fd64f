// A small complete setup for the relocation and memory suites: a monitor space
// and one guest space (x86-64 tables over the shared host frames), a stub of N
// pages with real frames, guest pages with real frames under a victim range,
// a pool shadow store, fixups (eight slots, or the x86-64 stub tables' own) and
// the relocation manager over them.
// Placements A (first, free), B (free) and V (the guest's pages) lie in the
// same 2 MiB, so every move writes entries of the same two page tables.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "asreloc/core/pcg32.hpp"
#include "asreloc/manager/relocation_manager.hpp"
#include "asreloc/paging/indexed_page_table.hpp"
#include "asreloc/paging/tlb.hpp"
#include "asreloc/policy/first_fit_finder.hpp"
#include "asreloc/policy/pool_shadow_store.hpp"
#include "asreloc/policy/random_victim.hpp"
#include "asreloc/policy/trap_count_tracker.hpp"
#include "asreloc/x86_64/stub_layout.hpp"
#include "bench_context.hpp"

namespace asreloc::bench {

template <manager_limits Limits = manager_limits{}, class Space = space>
using bench_manager = relocation_manager<Space, bottom_up_finder, random_victim<pcg32>, pool_shadow_store,
                                         trap_count_tracker<>, no_tlb, offset_phys_map, null_trace, Limits>;

// What the stub's fixups rewrite when it moves: eight 8-byte slots (the least
// a stub can carry), or x86_64::stub_tables with every one of the 256 IDT
// gates present, RSP0 and IST1 in use, through x86_64::stub_fixups (what a
// monitor that takes every vector carries; 4 pages or more).
enum class stub_fixups_kind : std::uint8_t { slots, x86_tables };

// Indexed: the manager works on indexed_page_table wrappers of the same
// tables (made after the guest's pages are mapped), to show what keeping the
// index costs a move.
template <bool Indexed = false>
class basic_manager_world {
public:
    using managed_space = std::conditional_t<Indexed, indexed_page_table<space>, space>;

    static constexpr std::size_t fixup_slots = 8;
    static constexpr std::uint64_t base = 0x4000'0000;
    static constexpr std::uint64_t built_for = 0x1000'0000;

    basic_manager_world(bench_context& ctx, std::size_t pages, stub_fixups_kind fixups = stub_fixups_kind::slots)
        : ctx_(ctx), pages_(pages), fixups_kind_(fixups) {}
    basic_manager_world(const basic_manager_world&) = delete;
    basic_manager_world& operator=(const basic_manager_world&) = delete;
    ~basic_manager_world() {
        manager_.reset();
        indexed_monitor_.reset();
        indexed_guest_.reset();
        monitor_.reset();
        guest_.reset();
        for (phys_addr f : stub_frames_) ctx_.frames.deallocate_frame(f);
        for (phys_addr f : guest_frames_) ctx_.frames.deallocate_frame(f);
    }

    // Builds everything and places the stub at A; an error message on failure.
    std::optional<std::string> setup() {
        auto m = space::create(ctx_.frames, ctx_.memory, x86_64::paging_mode::four_level);
        auto g = space::create(ctx_.frames, ctx_.memory, x86_64::paging_mode::four_level);
        if (!m || !g) return "cannot create the spaces";
        monitor_ = std::make_unique<space>(std::move(*m));
        guest_ = std::make_unique<space>(std::move(*g));
        a_ = virt_range::of(virt_addr{base}, pages_ * page_bytes);
        b_ = virt_range::of(virt_addr{base + (1 << 20)}, pages_ * page_bytes);
        v_ = virt_range::of(virt_addr{base + (512 << 10)}, pages_ * page_bytes);
        for (std::size_t i = 0; i < pages_; ++i) {
            auto s = ctx_.frames.allocate_frame();
            auto f = ctx_.frames.allocate_frame();
            if (!s || !f) return "out of frames";
            stub_frames_.push_back(*s);
            guest_frames_.push_back(*f);
            std::memset(ctx_.memory.to_virt(*s), 0x5b, page_bytes);
            std::memset(ctx_.memory.to_virt(*f), static_cast<int>(i), page_bytes);
            stub_.push_back(stub_page{*s, read_write});
            auto mapped = guest_->map(virt_range::of(v_.start() + i * page_bytes, page_bytes), *f, user_read_write,
                                      page_size::size_4k);
            if (!mapped) return std::string("cannot map the guest's pages: ") + to_string(mapped.error_code());
            mapped->ignore();
        }
        slots_.resize(pages_);
        index_.resize(pages_);
        store_.emplace(slots_, index_);
        manager_config config;
        config.window = virt_range::of(virt_addr{base}, std::uint64_t{2} << 20);
        if (auto failed = make_managed_spaces()) return failed;
        manager_ = std::make_unique<bench_manager<manager_limits{}, managed_space>>(
            *managed_monitor(), finder_, victims_, *store_, tracker_, tlb_, ctx_.memory, config);
        if (auto failed = add_fixups()) return failed;
        if (!manager_->add_guest_space(*managed_guest())) return "cannot add the guest space";
        auto placed = manager_->place({stub_, virt_addr{built_for}});
        if (!placed) return std::string("cannot place the stub: ") + to_string(placed.error_code());
        if (placed->to != a_) return "the stub was not placed at the window's start";
        return std::nullopt;
    }

    bench_manager<manager_limits{}, managed_space>& manager() { return *manager_; }
    virt_range a() const { return a_; }
    virt_range b() const { return b_; }
    virt_range v() const { return v_; }
    std::size_t pages() const { return pages_; }
    std::span<const phys_addr> guest_frames() const { return guest_frames_; }
    std::span<const phys_addr> stub_frames() const { return stub_frames_; }
    std::array<std::uint64_t, fixup_slots>& fixed() { return fixed_; }
    x86_64::stub_tables& tables() { return *tables_; }
    std::size_t fixup_count() const { return fixup_count_; }
    space& monitor() { return *monitor_; }
    space& guest() { return *guest_; }
    const offset_phys_map& memory() const { return ctx_.memory; }

    // The level-1 table holding va's entry in `s` (built: A, B, V share it).
    std::uint64_t* page_table_of(space& s, virt_addr va) const {
        auto* table = reinterpret_cast<std::uint64_t*>(ctx_.memory.to_virt(s.root()));
        for (unsigned level = 4; level > 1; --level) {
            const std::uint64_t e = table[x86_64::table_index(va.value(), level)];
            table = reinterpret_cast<std::uint64_t*>(ctx_.memory.to_virt(phys_addr{e & x86_64::bits::address}));
        }
        return table;
    }

    // The stub's layout in x86_tables mode: two table pages, one of entry
    // code, the rest data.
    x86_64::stub_layout x86_layout() const { return {.entry_code_pages = 1, .data_pages = pages_ - 3}; }
    // The tables as the embedder builds them for a stub at `at`: every gate
    // to its 16-byte entry, RSP0 at the top of the data, IST1 2 KiB below.
    void build_x86_tables(x86_64::stub_tables& t, virt_addr at) const {
        const x86_64::stub_layout layout = x86_layout();
        t.place(at);
        for (std::size_t v = 0; v < x86_64::idt_vectors; ++v)
            t.idt_gates[v] = x86_64::idt_gate::make(at.value() + layout.entry_code_offset() + 16 * v,
                                                    x86_64::kernel_code_selector, x86_64::system_type::interrupt_gate);
        t.tss.rsp[0] = at.value() + layout.size();
        t.tss.ist[0] = at.value() + layout.size() - 2048;
    }

private:
    std::optional<std::string> add_fixups() {
        if (fixups_kind_ == stub_fixups_kind::slots) {
            for (std::size_t i = 0; i < fixup_slots; ++i) {
                fixed_[i] = built_for + i * 64;
                if (!manager_->add_fixup(slot_fixup(&fixed_[i]))) return "cannot add a fixup";
            }
            fixup_count_ = fixup_slots;
            return std::nullopt;
        }
        if (pages_ < 4) return "the x86-64 stub tables need a stub of 4 pages or more";
        tables_ = std::make_unique<x86_64::stub_tables>();
        build_x86_tables(*tables_, virt_addr{built_for});
        table_fixups_ = std::make_unique<x86_64::stub_fixups>(*tables_, x86_layout().size());
        const auto list = table_fixups_->list();
        for (const fixup& f : list)
            if (!manager_->add_fixup(f)) return "cannot add a fixup";
        fixup_count_ = list.size();
        return std::nullopt;
    }

    std::optional<std::string> make_managed_spaces() {
        if constexpr (Indexed) {
            monitor_nodes_.resize(64);
            guest_nodes_.resize(64);
            auto m = indexed_page_table<space>::over(*monitor_, monitor_nodes_);
            auto g = indexed_page_table<space>::over(*guest_, guest_nodes_);
            if (!m || !g) return "cannot index the spaces";
            indexed_monitor_.emplace(std::move(*m));
            indexed_guest_.emplace(std::move(*g));
        }
        return std::nullopt;
    }
    managed_space* managed_monitor() {
        if constexpr (Indexed) return &*indexed_monitor_;
        else return monitor_.get();
    }
    managed_space* managed_guest() {
        if constexpr (Indexed) return &*indexed_guest_;
        else return guest_.get();
    }

    bench_context& ctx_;
    std::size_t pages_;
    stub_fixups_kind fixups_kind_;
    std::size_t fixup_count_ = 0;
    std::unique_ptr<space> monitor_, guest_;
    std::vector<phys_addr> stub_frames_, guest_frames_;
    std::vector<stub_page> stub_;
    std::vector<page_slot> slots_;
    std::vector<shadow_entry> index_;
    std::optional<pool_shadow_store> store_;
    pcg32 gen_{0x5eed};
    random_victim<pcg32> victims_{gen_};
    trap_count_tracker<> tracker_;
    no_tlb tlb_;
    bottom_up_finder finder_;
    std::array<std::uint64_t, fixup_slots> fixed_{};
    std::unique_ptr<x86_64::stub_tables> tables_;
    std::unique_ptr<x86_64::stub_fixups> table_fixups_;
    std::vector<gap_index::node> monitor_nodes_, guest_nodes_;
    std::optional<indexed_page_table<space>> indexed_monitor_, indexed_guest_;
    std::unique_ptr<bench_manager<manager_limits{}, managed_space>> manager_;
    virt_range a_, b_, v_;
};

using manager_world = basic_manager_world<false>;

}  // namespace asreloc::bench
