// The free space of an address space as an index: its maximal free ranges,
// kept in address order with each subtree knowing its widest range (so the
// first range of at least n bytes in a window is reached without visiting the
// narrower ones) and in size order (so the smallest range that fits is reached
// directly). A finder that asks it never walks page tables at all.
//
// Two treaps (randomised search trees, Seidel & Aragon 1996) threaded through
// one array of nodes the caller provides: no heap, expected O(log n) per change
// and per range reported, n the number of free ranges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "asreloc/core/address.hpp"
#include "asreloc/core/pcg32.hpp"
#include "asreloc/paging/mapping.hpp"

namespace asreloc {

class gap_index {
public:
    static constexpr std::uint32_t nil = ~std::uint32_t{0};

    // One free range. Sizes are kept as last - first ("span") so that a range
    // reaching 2^64 - 1 never overflows.
    struct node {
        std::uint64_t first = 0, last = 0;
        std::uint64_t widest = 0;                        // largest span in its address subtree
        std::uint32_t left = nil, right = nil;           // address treap
        std::uint32_t smaller = nil, larger = nil;       // size treap, keyed by (span, first)
        std::uint32_t priority = 0;                      // heap order of both treaps
    };

    // Every node of `storage` is the index's until it is destroyed. A space
    // with n maximal free ranges needs n nodes, plus one for the change in
    // progress.
    explicit gap_index(std::span<node> storage, std::uint64_t seed = 0x9e3779b97f4a7c15ULL) noexcept
        : nodes_(storage.first(storage.size() < nil ? storage.size() : nil - 1)), random_(seed) {
        clear();
    }
    // Moving hands the nodes over; the moved-from index is empty and has no
    // room.
    gap_index(gap_index&& o) noexcept
        : nodes_(o.nodes_), random_(o.random_), by_address_(o.by_address_), by_size_(o.by_size_), spare_(o.spare_),
          count_(o.count_) {
        o.nodes_ = {};
        o.by_address_ = o.by_size_ = o.spare_ = nil;
        o.count_ = 0;
    }
    gap_index(const gap_index&) = delete;
    gap_index& operator=(const gap_index&) = delete;
    gap_index& operator=(gap_index&&) = delete;

    std::size_t size() const noexcept { return count_; }
    std::size_t capacity() const noexcept { return nodes_.size(); }
    // Whether `changes` more changes can be recorded: a change never needs
    // more than one node beyond those it gives back.
    bool has_room(std::size_t changes = 1) const noexcept {
        std::uint32_t n = spare_;
        for (; changes > 0 && n != nil; --changes) n = nodes_[n].left;
        return changes == 0;
    }

    void clear() noexcept {
        by_address_ = by_size_ = nil;
        count_ = 0;
        spare_ = nil;
        for (std::size_t i = nodes_.size(); i-- > 0;) give_back(static_cast<std::uint32_t>(i));
    }

    // `r` becomes free, joining the free ranges it overlaps or touches.
    // Requires has_room().
    void add_free(const virt_range& r) noexcept {
        if (!add_between(r)) add_across(r);
    }

    // `r` is no longer free. Requires has_room().
    void remove_free(const virt_range& r) noexcept {
        if (!remove_inside(r)) remove_across(r);
    }

    // Calls visit(range) for each free range whose part inside `window` is at
    // least `min_bytes` long (that part is what visit sees), in the order
    // asked, until visit answers stop.
    template <class Visit>
    walk_control for_each_gap_at_least(const virt_range& window, walk_order order, std::uint64_t min_bytes,
                                       Visit&& visit) const {
        const std::uint64_t least = span_of(min_bytes);
        if (least == 0) return in_address_order(by_address_, window, order, least, visit);
        // A search: usually the first range it reports is the answer, so each
        // range is found by one descent of its own rather than by walking
        // the tree in order.
        std::uint64_t wlo = window.start().value(), whi = window.last().value();
        for (;;) {
            std::uint64_t lo, hi;
            const bool found = order == walk_order::bottom_up ? lowest_at_least(wlo, whi, least, lo, hi)
                                                              : highest_at_least(wlo, whi, least, lo, hi);
            if (!found) return walk_control::proceed;
            if (visit(virt_range::from_bounds(virt_addr{lo}, virt_addr{hi})) == walk_control::stop)
                return walk_control::stop;
            if (order == walk_order::bottom_up) {
                if (hi == whi) return walk_control::proceed;
                wlo = hi + 1;
            } else {
                if (lo == wlo) return walk_control::proceed;
                whi = lo - 1;
            }
        }
    }

    // The same ranges, smallest part-inside-the-window first (ties: the
    // lowest). Ranges wholly outside the window are skipped one by one, so a
    // window far narrower than the space costs more than one in proportion.
    //
    // Where the walk in size order meets many ranges outside the window in a
    // row (a window far narrower than the space), it goes on in the window
    // instead: each next-smallest range found by a walk of the window's
    // ranges, O(k) per range reported for the k ranges in the window, cheap
    // when, as for a best fit, one of the first ranges reported is the answer.
    template <class Visit>
    walk_control for_each_gap_by_size(const virt_range& window, std::uint64_t min_bytes, Visit&& visit) const {
        const std::uint64_t least = span_of(min_bytes);
        const std::uint64_t wlo = window.start().value(), whi = window.last().value();
        // The ranges the window's ends cut are judged by their part inside it.
        edge_list edges;
        const std::uint32_t at_lo = containing(wlo), at_hi = containing(whi);
        edges.add(at_lo, clipped(at_lo, window), least);
        if (at_hi != at_lo) edges.add(at_hi, clipped(at_hi, window), least);

        // Size order: the next range after the key (span, first) each time.
        std::uint64_t key_span = least, key_first = 0;
        std::size_t outside_in_a_row = 0;
        for (std::uint32_t t; (t = lower_bound(key_span, key_first)) != nil;) {
            const node& n = nodes_[t];
            key_span = n.last - n.first;
            key_first = n.first + 1;  // ranges are disjoint: nothing else starts at n.first
            if (t == at_lo || t == at_hi) continue;
            if (n.last < wlo || n.first > whi) {
                if (++outside_in_a_row == outside_budget) {
                    // Every range of the window ordered before this key has
                    // been reported once the edges before it are.
                    if (edges.emit_before(key_span, n.first, visit) == walk_control::stop) return walk_control::stop;
                    return in_window_by_size(window, key_span, key_first, visit);
                }
                continue;
            }
            outside_in_a_row = 0;
            if (edges.emit_before(key_span, n.first, visit) == walk_control::stop) return walk_control::stop;
            if (visit(range_of(n)) == walk_control::stop) return walk_control::stop;
        }
        return edges.emit_before(~std::uint64_t{0}, ~std::uint64_t{0}, visit, true);
    }

private:
    static constexpr std::uint64_t min(std::uint64_t a, std::uint64_t b) noexcept { return a < b ? a : b; }
    static constexpr std::uint64_t max(std::uint64_t a, std::uint64_t b) noexcept { return a < b ? b : a; }
    static constexpr std::uint64_t span_of(std::uint64_t bytes) noexcept { return bytes == 0 ? 0 : bytes - 1; }
    // Size order: (span, first), the key of the size treap and of every
    // walk in size order.
    static constexpr bool key_less(std::uint64_t span_a, std::uint64_t first_a, std::uint64_t span_b,
                                   std::uint64_t first_b) noexcept {
        return span_a != span_b ? span_a < span_b : first_a < first_b;
    }
    static constexpr bool key_less(const virt_range& a, std::uint64_t span_b, std::uint64_t first_b) noexcept {
        return key_less(a.last() - a.start(), a.start().value(), span_b, first_b);
    }
    static constexpr virt_range range_of(const node& n) noexcept {
        return virt_range::from_bounds(virt_addr{n.first}, virt_addr{n.last});
    }

    static constexpr std::size_t outside_budget = 32;  // ranges outside the window in a row

    // for_each_gap_by_size from the key (after_span, after_first) on, by
    // walks of the window: each range reported is the smallest (span,
    // start) at or after the last key, among the window's ranges of span at
    // least after_span.
    template <class Visit>
    walk_control in_window_by_size(const virt_range& window, std::uint64_t after_span, std::uint64_t after_first,
                                   Visit& visit) const {
        for (;;) {
            bool found = false;
            virt_range next{};
            auto keep_smallest = [&](const virt_range& r) {
                const bool at_or_after = !key_less(r, after_span, after_first);
                if (at_or_after && (!found || key_less(r, next.last() - next.start(), next.start().value()))) {
                    next = r;
                    found = true;
                }
                return walk_control::proceed;
            };
            (void)in_address_order(by_address_, window, walk_order::bottom_up, after_span, keep_smallest);
            if (!found) return walk_control::proceed;
            if (visit(next) == walk_control::stop) return walk_control::stop;
            after_span = next.last() - next.start();
            after_first = next.start().value() + 1;
        }
    }

    // Up to two clipped ranges at the window's ends, in size order.
    struct edge_list {
        virt_range range[2]{};
        std::uint32_t count = 0, emitted = 0;

        void add(std::uint32_t t, const virt_range& r, std::uint64_t least) noexcept {
            if (t == nil || r.last() - r.start() < least) return;
            range[count++] = r;
            if (count == 2 && key_less(range[1], range[0].last() - range[0].start(), range[0].start().value())) {
                const virt_range swap = range[0];
                range[0] = range[1];
                range[1] = swap;
            }
        }
        // Reports the edges ordered before (span, first), or all that are left.
        template <class Visit>
        walk_control emit_before(std::uint64_t span, std::uint64_t first, Visit& visit, bool all = false) noexcept {
            for (; emitted < count; ++emitted) {
                const virt_range& r = range[emitted];
                if (!all && key_less(span, first, r.last() - r.start(), r.start().value())) break;
                if (visit(r) == walk_control::stop) return walk_control::stop;
            }
            return walk_control::proceed;
        }
    };

    virt_range clipped(std::uint32_t t, const virt_range& window) const noexcept {
        if (t == nil) return {};
        return virt_range::from_bounds(virt_addr{max(nodes_[t].first, window.start().value())},
                                       virt_addr{min(nodes_[t].last, window.last().value())});
    }

    // In-order walk of the subtree at t, pruning subtrees with no range wide
    // enough and subtrees outside the window before descending into them.
    template <class Visit>
    walk_control in_address_order(std::uint32_t t, const virt_range& w, walk_order order, std::uint64_t least,
                                  Visit& visit) const {
        const std::uint64_t wlo = w.start().value(), whi = w.last().value();
        while (t != nil && nodes_[t].widest >= least) {
            const node& n = nodes_[t];
            // The left subtree lies below n.first, the right one above n.last.
            const bool up = order == walk_order::bottom_up;
            const std::uint32_t near = up ? n.left : n.right, far = up ? n.right : n.left;
            const bool near_may_meet = up ? n.first > wlo : n.last < whi;
            const bool far_may_meet = up ? n.last < whi : n.first > wlo;
            if (near_may_meet && wide_enough(near, least) &&
                in_address_order(near, w, order, least, visit) == walk_control::stop)
                return walk_control::stop;
            const std::uint64_t lo = max(n.first, wlo), hi = min(n.last, whi);
            if (lo <= hi && hi - lo >= least &&
                visit(virt_range::from_bounds(virt_addr{lo}, virt_addr{hi})) == walk_control::stop)
                return walk_control::stop;
            if (!far_may_meet) break;
            t = far;  // the far subtree last: a loop, not a call
        }
        return walk_control::proceed;
    }

    bool wide_enough(std::uint32_t t, std::uint64_t least) const noexcept {
        return t != nil && nodes_[t].widest >= least;
    }

    std::uint64_t span(std::uint32_t t) const noexcept { return nodes_[t].last - nodes_[t].first; }

    // The lowest range whose part inside [wlo, whi] spans at least `least`,
    // as that part in [lo, hi]; false when there is none. One descent
    // towards wlo finds both the range holding wlo (the last node where it
    // turns right) and the holder of the answer among the ranges above: those
    // are, in order, each node where the descent turns left (deepest first),
    // then its right subtree, so the deepest such node holding a wide-enough
    // range (itself or below its right) holds the answer.
    bool lowest_at_least(std::uint64_t wlo, std::uint64_t whi, std::uint64_t least, std::uint64_t& lo,
                         std::uint64_t& hi) const noexcept {
        std::uint32_t below = nil, holder = nil;
        for (std::uint32_t t = by_address_; t != nil;) {
            const node& n = nodes_[t];
            if (n.first <= wlo) {
                below = t;
                t = n.right;
                continue;
            }
            if (span(t) >= least || wide_enough(n.right, least)) holder = t;
            t = n.left;
        }
        if (below != nil && nodes_[below].last >= wlo) {  // the range holding wlo comes first
            lo = wlo;
            hi = min(nodes_[below].last, whi);
            if (hi - lo >= least) return true;
            if (nodes_[below].last >= whi) return false;
        }
        if (holder == nil) return false;
        std::uint32_t t = holder;
        if (span(t) < least) {
            // `widest` is exact, so the lowest wide-enough range is found
            // without turning back.
            t = nodes_[t].right;
            while (span(t) < least || wide_enough(nodes_[t].left, least))
                t = wide_enough(nodes_[t].left, least) ? nodes_[t].left : nodes_[t].right;
        }
        if (nodes_[t].first > whi) return false;
        lo = nodes_[t].first;
        hi = min(nodes_[t].last, whi);
        return hi - lo >= least;  // cut by the window's end: nothing above is inside it
    }

    // The mirror image: the highest such range. The descent towards whi turns
    // right at the candidates (deepest first, each then its left subtree);
    // the deepest of them is the range that may hold whi, which counts only
    // for its part inside the window.
    bool highest_at_least(std::uint64_t wlo, std::uint64_t whi, std::uint64_t least, std::uint64_t& lo,
                          std::uint64_t& hi) const noexcept {
        std::uint32_t deepest = nil, holder = nil, holder_above_deepest = nil;
        for (std::uint32_t t = by_address_; t != nil;) {
            const node& n = nodes_[t];
            if (n.first > whi) {
                t = n.left;
                continue;
            }
            deepest = t;
            holder_above_deepest = holder;
            if (span(t) >= least || wide_enough(n.left, least)) holder = t;
            t = n.right;
        }
        if (deepest != nil && nodes_[deepest].last >= whi) {  // the range holding whi comes first
            lo = max(nodes_[deepest].first, wlo);
            hi = whi;
            if (hi - lo >= least) return true;
            if (nodes_[deepest].first <= wlo) return false;
            // Only what lies below it is left: its left subtree, then the
            // shallower candidates.
            holder = wide_enough(nodes_[deepest].left, least) ? deepest : holder_above_deepest;
            if (holder == deepest) return highest_below(nodes_[deepest].left, wlo, least, lo, hi);
        }
        if (holder == nil) return false;
        if (span(holder) >= least) return clip_from(holder, wlo, least, lo, hi);
        return highest_below(nodes_[holder].left, wlo, least, lo, hi);
    }

    // The highest wide-enough range of the subtree at t (which has one),
    // clipped to start at wlo.
    bool highest_below(std::uint32_t t, std::uint64_t wlo, std::uint64_t least, std::uint64_t& lo,
                       std::uint64_t& hi) const noexcept {
        while (span(t) < least || wide_enough(nodes_[t].right, least))
            t = wide_enough(nodes_[t].right, least) ? nodes_[t].right : nodes_[t].left;
        return clip_from(t, wlo, least, lo, hi);
    }
    bool clip_from(std::uint32_t t, std::uint64_t wlo, std::uint64_t least, std::uint64_t& lo,
                   std::uint64_t& hi) const noexcept {
        if (nodes_[t].last < wlo) return false;
        lo = max(nodes_[t].first, wlo);
        hi = nodes_[t].last;
        return hi - lo >= least;  // cut by the window's start: nothing below is inside it
    }

    // ---- changes ----

    // The common add: `r` holds no free byte (it was mapped until now), so it
    // can only touch the range ending just below it and the one starting just
    // above it. False when `r` overlaps free space: add_across handles that.
    bool add_between(const virt_range& r) noexcept {
        const std::uint64_t lo = r.start().value(), hi = r.last().value();
        const std::uint32_t below = floor(hi);
        if (below != nil && nodes_[below].last >= lo) return false;  // overlaps free space
        const bool joins_below = below != nil && nodes_[below].last + 1 == lo;
        const std::uint32_t above = hi == ~std::uint64_t{0} ? nil : starting_at(hi + 1);
        if (joins_below && above != nil) {
            const std::uint64_t last = nodes_[above].last;
            remove_node(above);
            reshape(below, nodes_[below].first, last);
        } else if (joins_below) {
            reshape(below, nodes_[below].first, hi);
        } else if (above != nil) {
            reshape(above, lo, nodes_[above].last);
        } else {
            by_address_ = insert_by_address(by_address_, make(lo, hi));
        }
        return true;
    }

    // The general add: every free range `r` overlaps or touches is taken out
    // and one range covering them all put in.
    void add_across(const virt_range& r) noexcept {
        const std::uint64_t lo = r.start().value(), hi = r.last().value();
        const std::uint32_t before = floor(lo);
        const bool joins_before = before != nil && (nodes_[before].last >= lo || nodes_[before].last + 1 == lo);
        std::uint32_t below, rest, touched, above;
        split(by_address_, joins_before ? nodes_[before].first : lo, below, rest);
        split_after(rest, hi == ~std::uint64_t{0} ? hi : hi + 1, touched, above);
        std::uint64_t first = lo, last = hi;
        if (touched != nil) {
            first = min(first, nodes_[leftmost(touched)].first);
            last = max(last, nodes_[rightmost(touched)].last);
            release(touched);
        }
        by_address_ = join(join(below, make(first, last)), above);
    }

    // The common remove: `r` lies inside one free range (a map that
    // succeeded). False otherwise: remove_across handles that.
    bool remove_inside(const virt_range& r) noexcept {
        const std::uint64_t lo = r.start().value(), hi = r.last().value();
        const std::uint32_t t = containing(lo);
        if (t == nil || nodes_[t].last < hi) return false;
        const std::uint64_t first = nodes_[t].first, last = nodes_[t].last;
        if (first == lo && last == hi) {
            remove_node(t);
        } else if (first == lo) {
            reshape(t, hi + 1, last);
        } else if (last == hi) {
            reshape(t, first, lo - 1);
        } else {
            reshape(t, first, lo - 1);
            by_address_ = insert_by_address(by_address_, make(hi + 1, last));
        }
        return true;
    }

    // The general remove: the free ranges `r` overlaps are taken out and what
    // sticks out of it at either end put back.
    void remove_across(const virt_range& r) noexcept {
        const std::uint64_t lo = r.start().value(), hi = r.last().value();
        const std::uint32_t before = floor(lo);
        const bool cut_before = before != nil && nodes_[before].last >= lo;
        std::uint32_t below, rest, cut, above;
        split(by_address_, cut_before ? nodes_[before].first : lo, below, rest);
        split_after(rest, hi, cut, above);
        if (cut != nil) {
            const node low = nodes_[leftmost(cut)], high = nodes_[rightmost(cut)];
            release(cut);
            if (low.first < lo) below = join(below, make(low.first, lo - 1));
            if (high.last > hi) above = join(make(hi + 1, high.last), above);
        }
        by_address_ = join(below, above);
    }

    // Gives node t new bounds that keep its place in address order.
    void reshape(std::uint32_t t, std::uint64_t first, std::uint64_t last) noexcept {
        by_size_ = erase_by_size(by_size_, t);
        const std::uint64_t old_first = nodes_[t].first;
        nodes_[t].first = first;
        nodes_[t].last = last;
        refresh(by_address_, old_first < first ? old_first : first, t);
        nodes_[t].smaller = nodes_[t].larger = nil;  // erase left them pointing into the treap
        by_size_ = insert_by_size(by_size_, t);
    }

    void remove_node(std::uint32_t t) noexcept {
        by_size_ = erase_by_size(by_size_, t);
        by_address_ = erase_by_address(by_address_, t);
        --count_;
        give_back(t);
    }

    // ---- nodes ----

    void give_back(std::uint32_t t) noexcept {
        nodes_[t].left = spare_;
        spare_ = t;
    }

    std::uint32_t make(std::uint64_t first, std::uint64_t last) noexcept {
        const std::uint32_t t = spare_;  // has_room() was the caller's promise
        spare_ = nodes_[t].left;
        nodes_[t] = node{.first = first, .last = last, .widest = last - first, .priority = random_()};
        by_size_ = insert_by_size(by_size_, t);
        ++count_;
        return t;
    }

    // Gives back every node of an address subtree, after taking it out of the
    // size treap.
    void release(std::uint32_t t) noexcept {
        if (t == nil) return;
        release(nodes_[t].left);
        release(nodes_[t].right);
        by_size_ = erase_by_size(by_size_, t);
        --count_;
        give_back(t);
    }

    // ---- the address treap ----

    void pull(std::uint32_t t) noexcept {
        node& n = nodes_[t];
        n.widest = n.last - n.first;
        if (n.left != nil) n.widest = max(n.widest, nodes_[n.left].widest);
        if (n.right != nil) n.widest = max(n.widest, nodes_[n.right].widest);
    }

    // Splits t into the ranges starting below `key` and the rest.
    void split(std::uint32_t t, std::uint64_t key, std::uint32_t& lo, std::uint32_t& hi) noexcept {
        if (t == nil) {
            lo = hi = nil;
            return;
        }
        if (nodes_[t].first < key) {
            split(nodes_[t].right, key, nodes_[t].right, hi);
            lo = t;
        } else {
            split(nodes_[t].left, key, lo, nodes_[t].left);
            hi = t;
        }
        pull(t);
    }

    // Splits t into the ranges starting at or below `key` and the rest.
    void split_after(std::uint32_t t, std::uint64_t key, std::uint32_t& lo, std::uint32_t& hi) noexcept {
        if (key == ~std::uint64_t{0}) {
            lo = t;
            hi = nil;
            return;
        }
        split(t, key + 1, lo, hi);
    }

    // Joins two treaps, every range of `a` below every range of `b`.
    std::uint32_t join(std::uint32_t a, std::uint32_t b) noexcept {
        if (a == nil) return b;
        if (b == nil) return a;
        if (nodes_[a].priority > nodes_[b].priority) {
            nodes_[a].right = join(nodes_[a].right, b);
            pull(a);
            return a;
        }
        nodes_[b].left = join(a, nodes_[b].left);
        pull(b);
        return b;
    }

    // Inserts x by descent: below the first node of lower priority.
    std::uint32_t insert_by_address(std::uint32_t t, std::uint32_t x) noexcept {
        if (t == nil) return x;
        if (nodes_[x].priority > nodes_[t].priority) {
            split(t, nodes_[x].first, nodes_[x].left, nodes_[x].right);
            pull(x);
            return x;
        }
        if (nodes_[t].first < nodes_[x].first) nodes_[t].right = insert_by_address(nodes_[t].right, x);
        else nodes_[t].left = insert_by_address(nodes_[t].left, x);
        pull(t);
        return t;
    }

    std::uint32_t erase_by_address(std::uint32_t t, std::uint32_t x) noexcept {
        if (t == x) return join(nodes_[t].left, nodes_[t].right);
        if (nodes_[t].first < nodes_[x].first) nodes_[t].right = erase_by_address(nodes_[t].right, x);
        else nodes_[t].left = erase_by_address(nodes_[t].left, x);
        pull(t);
        return t;
    }

    // Recomputes `widest` on the path to x, found by a key that orders like
    // its start did before and does now (the lower of the two).
    void refresh(std::uint32_t t, std::uint64_t key, std::uint32_t x) noexcept {
        if (t != x) refresh(nodes_[t].first < key ? nodes_[t].right : nodes_[t].left, key, x);
        pull(t);
    }

    std::uint32_t starting_at(std::uint64_t va) const noexcept {
        const std::uint32_t t = floor(va);
        return t != nil && nodes_[t].first == va ? t : nil;
    }

    std::uint32_t leftmost(std::uint32_t t) const noexcept {
        while (nodes_[t].left != nil) t = nodes_[t].left;
        return t;
    }
    std::uint32_t rightmost(std::uint32_t t) const noexcept {
        while (nodes_[t].right != nil) t = nodes_[t].right;
        return t;
    }

    // The range starting at or below va with the highest start, or nil.
    std::uint32_t floor(std::uint64_t va) const noexcept {
        std::uint32_t found = nil;
        for (std::uint32_t t = by_address_; t != nil;) {
            if (nodes_[t].first <= va) {
                found = t;
                t = nodes_[t].right;
            } else {
                t = nodes_[t].left;
            }
        }
        return found;
    }
    std::uint32_t containing(std::uint64_t va) const noexcept {
        const std::uint32_t t = floor(va);
        return t != nil && nodes_[t].last >= va ? t : nil;
    }

    // ---- the size treap, keyed by (span, first) ----

    bool size_less(std::uint32_t a, std::uint64_t span, std::uint64_t first) const noexcept {
        return key_less(nodes_[a].last - nodes_[a].first, nodes_[a].first, span, first);
    }

    std::uint32_t insert_by_size(std::uint32_t t, std::uint32_t x) noexcept {
        if (t == nil) return x;
        const std::uint64_t span = nodes_[x].last - nodes_[x].first, first = nodes_[x].first;
        if (nodes_[x].priority > nodes_[t].priority) {
            split_by_size(t, span, first, nodes_[x].smaller, nodes_[x].larger);
            return x;
        }
        if (size_less(t, span, first)) nodes_[t].larger = insert_by_size(nodes_[t].larger, x);
        else nodes_[t].smaller = insert_by_size(nodes_[t].smaller, x);
        return t;
    }

    void split_by_size(std::uint32_t t, std::uint64_t span, std::uint64_t first, std::uint32_t& lo,
                       std::uint32_t& hi) noexcept {
        if (t == nil) {
            lo = hi = nil;
            return;
        }
        if (size_less(t, span, first)) {
            split_by_size(nodes_[t].larger, span, first, nodes_[t].larger, hi);
            lo = t;
        } else {
            split_by_size(nodes_[t].smaller, span, first, lo, nodes_[t].smaller);
            hi = t;
        }
    }

    std::uint32_t join_by_size(std::uint32_t a, std::uint32_t b) noexcept {
        if (a == nil) return b;
        if (b == nil) return a;
        if (nodes_[a].priority > nodes_[b].priority) {
            nodes_[a].larger = join_by_size(nodes_[a].larger, b);
            return a;
        }
        nodes_[b].smaller = join_by_size(a, nodes_[b].smaller);
        return b;
    }

    std::uint32_t erase_by_size(std::uint32_t t, std::uint32_t x) noexcept {
        if (t == x) return join_by_size(nodes_[t].smaller, nodes_[t].larger);
        const std::uint64_t span = nodes_[x].last - nodes_[x].first, first = nodes_[x].first;
        if (size_less(t, span, first)) nodes_[t].larger = erase_by_size(nodes_[t].larger, x);
        else nodes_[t].smaller = erase_by_size(nodes_[t].smaller, x);
        return t;
    }

    // The smallest range at or after (span, first) in size order, or nil.
    std::uint32_t lower_bound(std::uint64_t span, std::uint64_t first) const noexcept {
        std::uint32_t found = nil;
        for (std::uint32_t t = by_size_; t != nil;) {
            if (size_less(t, span, first)) {
                t = nodes_[t].larger;
            } else {
                found = t;
                t = nodes_[t].smaller;
            }
        }
        return found;
    }

    std::span<node> nodes_;
    pcg32 random_;
    std::uint32_t by_address_ = nil, by_size_ = nil, spare_ = nil;
    std::size_t count_ = 0;
};

}  // namespace asreloc
