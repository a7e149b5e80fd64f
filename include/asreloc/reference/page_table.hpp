// The reference backend: the page-table concept over a plain ordered map of
// leaves. It has no tables to get wrong, which makes it the model the x86-64
// backend is compared against, entry for entry, in the differential tests.
// Hosted (it allocates); never for a kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <type_traits>
#include <utility>
#include <vector>

#include "asreloc/core/address.hpp"
#include "asreloc/core/attributes.hpp"
#include "asreloc/core/result.hpp"
#include "asreloc/paging/flush.hpp"
#include "asreloc/paging/mapping.hpp"
#include "asreloc/paging/page_table.hpp"

namespace asreloc::reference {

class page_table {
public:
    // `width`: 48 for the canonical halves of 4-level paging, 57 for 5-level.
    explicit page_table(unsigned width = 48) : width_(width) {}

    bool is_canonical(virt_addr va) const noexcept { return va.is_canonical(width_); }

    result<translation> translate(virt_addr va) const {
        if (!is_canonical(va)) return failure(error::non_canonical);
        const auto it = leaf_containing(va.value());
        if (it == leaves_.end()) return failure(error::not_mapped);
        const auto m = to_mapping(*it);
        return translation{m.phys + (va - m.start), m};
    }

    result<flush> map(virt_range range, phys_addr phys, attributes attrs, page_size size) {
        if (size != page_size::size_4k && size != page_size::size_2m && size != page_size::size_1g)
            return failure(error::unsupported_page_size);
        if (!range.is_aligned(size) || !phys.is_aligned(size)) return failure(error::misaligned);
        if (!is_canonical_range(range)) return failure(error::non_canonical);
        if (!encodable(attrs)) return failure(error::invalid_attributes);
        const std::uint64_t last_phys = phys.value() + (range.size() - 1);
        if (last_phys < phys.value() || !phys_addr{last_phys}.is_valid()) return failure(error::out_of_bounds);
        if (any_leaf_in(range)) return failure(error::overlaps);
        for (std::uint64_t offset = 0; offset < range.size(); offset += bytes(size))
            leaves_[range.start().value() + offset] = leaf{phys + offset, size, attrs, false, false};
        return flush::none();
    }

    result<flush> unmap(virt_range range) {
        auto affected = prepare_change(range);
        if (!affected) return failure(affected.error_code());
        leaves_.erase(leaves_.lower_bound(range.start().value()), after(range));
        return flush::of(*affected);
    }

    result<flush> protect(virt_range range, attributes attrs) {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        if (!encodable(attrs)) return failure(error::invalid_attributes);
        auto affected = prepare_change(range);
        if (!affected) return failure(affected.error_code());
        for (auto it = leaves_.lower_bound(range.start().value()); it != after(range); ++it) it->second.attrs = attrs;
        return flush::of(*affected);
    }

    template <class Visitor>
    result<walk_control> for_each_mapping(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        std::vector<mapping> found;
        for (auto it = first_overlapping(window); it != leaves_.end() && it->first <= window.last().value(); ++it)
            found.push_back(to_mapping(*it));
        if (order == walk_order::top_down) std::reverse(found.begin(), found.end());
        for (const auto& m : found)
            if (call(visit, m) == walk_control::stop) return walk_control::stop;
        return walk_control::proceed;
    }

    template <class Visitor>
    result<walk_control> for_each_gap(virt_range window, walk_order order, Visitor&& visit) const {
        if (!window.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        std::vector<virt_range> gaps;
        for (const auto& half : canonical_halves()) {
            const auto part = intersect(half, window);
            if (part.any) collect_gaps(part.range, gaps);
        }
        if (order == walk_order::top_down) std::reverse(gaps.begin(), gaps.end());
        for (const auto& g : gaps)
            if (call(visit, g) == walk_control::stop) return walk_control::stop;
        return walk_control::proceed;
    }

    result<ad_sample> query_and_clear(virt_range range, ad_bits clear) {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        ad_sample sample;
        bool cleared = false;
        for (auto it = mutable_at(first_overlapping(range)); it != leaves_.end() && it->first <= range.last().value();
             ++it) {
            auto& l = it->second;
            const auto pages = intersect(range, span_of(*it)).range.size() / page_bytes;
            if (l.accessed) sample.accessed_pages += pages;
            if (l.dirty) sample.dirty_pages += pages;
            if ((has(clear, ad_bits::accessed) && l.accessed) || (has(clear, ad_bits::dirty) && l.dirty)) cleared = true;
            if (has(clear, ad_bits::accessed)) l.accessed = false;
            if (has(clear, ad_bits::dirty)) l.dirty = false;
        }
        if (cleared) sample.invalidate = flush::of(range);
        return sample;
    }

    status mark_accessed(virt_addr va, bool write) {
        if (!is_canonical(va)) return failure(error::non_canonical);
        const auto it = leaf_containing(va.value());
        if (it == leaves_.end()) return failure(error::not_mapped);
        it->second.accessed = true;
        if (write) it->second.dirty = true;
        return {};
    }

    // Where 512 leaves of one size inside `range` map contiguous frames with the
    // same attributes from an aligned frame, one leaf of the next size replaces
    // them (A and D ORed): what folding a full page table into its parent does.
    result<flush> coalesce(virt_range range) {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        flush merged = flush::none();
        merge_blocks(range, page_size::size_4k, page_size::size_2m, merged);
        merge_blocks(range, page_size::size_2m, page_size::size_1g, merged);
        return merged;
    }

    std::size_t leaf_count() const noexcept { return leaves_.size(); }

private:
    struct leaf {
        phys_addr phys;
        page_size size;
        attributes attrs;
        bool accessed;
        bool dirty;
    };
    using leaf_map = std::map<std::uint64_t, leaf>;

    static constexpr bool encodable(const attributes& a) noexcept {
        return a.memory_type <= 7 && a.protection_key <= 15;
    }
    template <class Visitor, class Arg>
    static walk_control call(Visitor& visit, const Arg& arg) {
        if constexpr (std::is_void_v<decltype(visit(arg))>) {
            visit(arg);
            return walk_control::proceed;
        } else {
            return visit(arg);
        }
    }
    static mapping to_mapping(const leaf_map::value_type& e) {
        return mapping{virt_addr{e.first}, e.second.phys, e.second.size, e.second.attrs, e.second.accessed,
                       e.second.dirty};
    }
    static virt_range span_of(const leaf_map::value_type& e) {
        return virt_range::of(virt_addr{e.first}, bytes(e.second.size));
    }

    std::uint64_t half_bytes() const noexcept { return std::uint64_t{1} << (width_ - 1); }
    std::vector<virt_range> canonical_halves() const {
        return {virt_range::of(virt_addr{0}, half_bytes()),
                virt_range::from_bounds(virt_addr{0 - half_bytes()}, virt_addr{~std::uint64_t{0}})};
    }
    bool is_canonical_range(const virt_range& r) const noexcept {
        return is_canonical(r.start()) && is_canonical(r.last()) &&
               ((r.start().value() ^ r.last().value()) >> 63) == 0;
    }
    status validate(const virt_range& range) const {
        if (!range.is_aligned(page_size::size_4k)) return failure(error::misaligned);
        if (!is_canonical_range(range)) return failure(error::non_canonical);
        return {};
    }

    leaf_map::const_iterator leaf_containing(std::uint64_t va) const {
        auto it = leaves_.upper_bound(va);
        if (it == leaves_.begin()) return leaves_.end();
        --it;
        return span_of(*it).contains(virt_addr{va}) ? it : leaves_.end();
    }
    // erase of an empty range is the standard way from a const_iterator to an iterator.
    leaf_map::iterator mutable_at(leaf_map::const_iterator it) { return leaves_.erase(it, it); }
    leaf_map::iterator leaf_containing(std::uint64_t va) { return mutable_at(std::as_const(*this).leaf_containing(va)); }
    leaf_map::const_iterator first_overlapping(const virt_range& r) const {
        auto it = leaves_.lower_bound(r.start().value());
        if (it != leaves_.begin()) {
            const auto before = std::prev(it);
            if (span_of(*before).overlaps(r)) return before;
        }
        return it;
    }
    leaf_map::iterator after(const virt_range& r) {
        return r.end().value() == 0 ? leaves_.end() : leaves_.lower_bound(r.end().value());
    }
    bool any_leaf_in(const virt_range& r) const {
        const auto it = first_overlapping(r);
        return it != leaves_.end() && it->first <= r.last().value();
    }
    bool fully_mapped(const virt_range& r) const {
        std::uint64_t next = r.start().value();
        for (auto it = first_overlapping(r); it != leaves_.end() && it->first <= r.last().value(); ++it) {
            if (it->first > next) return false;
            const auto end = span_of(*it).end().value();
            if (end == 0 || end > r.last().value()) return true;
            next = end;
        }
        return false;
    }

    void collect_gaps(const virt_range& part, std::vector<virt_range>& gaps) const {
        std::uint64_t next = part.start().value();
        bool open = true;  // `next` is still inside `part`
        for (auto it = first_overlapping(part); it != leaves_.end() && it->first <= part.last().value(); ++it) {
            if (it->first > next) gaps.push_back(virt_range::from_bounds(virt_addr{next}, virt_addr{it->first - 1}));
            const auto last = span_of(*it).last().value();
            if (last >= part.last().value()) {
                open = false;
                break;
            }
            next = last + 1;
        }
        if (open) gaps.push_back(virt_range::from_bounds(virt_addr{next}, part.last()));
    }

    // Split the leaf at `it` into 512 leaves of the next smaller size.
    void split(leaf_map::iterator it) {
        const auto big = it->second;
        const auto start = it->first;
        const page_size smaller = big.size == page_size::size_1g ? page_size::size_2m : page_size::size_4k;
        leaves_.erase(it);
        for (std::uint64_t i = 0; i < 512; ++i)
            leaves_[start + i * bytes(smaller)] = leaf{big.phys + i * bytes(smaller), smaller, big.attrs, big.accessed, big.dirty};
    }
    // Make `va` a leaf boundary, splitting the large leaves it cuts; widen
    // `affected` by every page split.
    void cut_at(std::uint64_t va, virt_range& affected) {
        for (auto it = leaf_containing(va); it != leaves_.end() && it->first != va; it = leaf_containing(va)) {
            affected = flush::of(affected).merge(flush::of(span_of(*it))).range();
            split(it);
        }
    }
    result<virt_range> prepare_change(const virt_range& range) {
        if (auto valid = validate(range); !valid) return failure(valid.error_code());
        if (!fully_mapped(range)) return failure(error::not_mapped);
        auto affected = range;
        cut_at(range.start().value(), affected);
        if (range.end().value() != 0) cut_at(range.end().value(), affected);
        return affected;
    }

    void merge_blocks(const virt_range& range, page_size small, page_size big, flush& merged) {
        std::vector<std::uint64_t> starts;
        for (auto it = first_overlapping(range); it != leaves_.end() && it->first <= range.last().value(); ++it)
            if (it->second.size == small && (it->first & (bytes(big) - 1)) == 0) starts.push_back(it->first);
        for (const auto start : starts) {
            const auto block = virt_range::of(virt_addr{start}, bytes(big));
            if (!range.contains(block)) continue;
            auto it = leaves_.find(start);
            const leaf first = it->second;
            if (!first.phys.is_aligned(big)) continue;
            bool accessed = false;
            bool dirty = false;
            bool ok = true;
            for (std::uint64_t i = 0; i < 512 && ok; ++i, ++it) {
                ok = it != leaves_.end() && it->first == start + i * bytes(small) && it->second.size == small &&
                     it->second.phys == first.phys + i * bytes(small) && it->second.attrs == first.attrs;
                if (ok) {
                    accessed = accessed || it->second.accessed;
                    dirty = dirty || it->second.dirty;
                }
            }
            if (!ok) continue;
            leaves_.erase(leaves_.find(start), leaves_.lower_bound(start + bytes(big)));
            leaves_[start] = leaf{first.phys, big, first.attrs, accessed, dirty};
            merged.merge(flush::of(block));
        }
    }

    unsigned width_;
    leaf_map leaves_;
};

static_assert(accessed_dirty_page_table<page_table>);

}  // namespace asreloc::reference
