// Errors as values: every fallible asreloc call returns a result<T>.
// std::expected is C++23 and not freestanding; this is the small subset we need,
// usable with -ffreestanding -fno-exceptions and no heap.
#pragma once

#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include <gsl/assert>

namespace asreloc {

// What went wrong. The names say what the caller handed us or what ran out;
// every error leaves the state exactly as it was before the call.
enum class error : std::uint8_t {
    misaligned,             // an address or size is not a multiple of the page size
    non_canonical,          // an address is outside the space's canonical halves
    overlaps,               // the range is already (partly) mapped or in use
    not_mapped,             // part of the range is not mapped
    out_of_frames,          // the frame allocator is empty
    unsupported_page_size,  // the backend or mode cannot map pages of this size
    empty_range,            // a range of size zero
    invalid_attributes,     // an attribute value the backend cannot encode
    no_free_range,          // no free range of the requested size in the window
    no_victim,              // no eligible (unpinned, guest-mapped) victim range
    shadow_store_full,      // the shadow store has no room for the displaced pages
    fixup_refused,          // a user fixup refused the new placement
    unknown_address_space,  // the address space is not registered with the manager
    capacity_exceeded,      // a fixed-capacity table (fixups, spaces, pins) is full
    not_placed,             // the stub has no placement yet
    out_of_bounds,          // an offset or size reaches past the end of a page or buffer
    write_protected,        // a write to a page the guest mapped read-only
};

constexpr const char* to_string(error e) noexcept {
    switch (e) {
    case error::misaligned: return "misaligned";
    case error::non_canonical: return "non_canonical";
    case error::overlaps: return "overlaps";
    case error::not_mapped: return "not_mapped";
    case error::out_of_frames: return "out_of_frames";
    case error::unsupported_page_size: return "unsupported_page_size";
    case error::empty_range: return "empty_range";
    case error::invalid_attributes: return "invalid_attributes";
    case error::no_free_range: return "no_free_range";
    case error::no_victim: return "no_victim";
    case error::shadow_store_full: return "shadow_store_full";
    case error::fixup_refused: return "fixup_refused";
    case error::unknown_address_space: return "unknown_address_space";
    case error::capacity_exceeded: return "capacity_exceeded";
    case error::not_placed: return "not_placed";
    case error::out_of_bounds: return "out_of_bounds";
    case error::write_protected: return "write_protected";
    }
    return "unknown";
}

// Tag that lets `return failure(error::x);` convert to any result<T>.
struct failure {
    error code;
    constexpr explicit failure(error e) noexcept : code(e) {}
};

template <class T>
class [[nodiscard]] result {
public:
    using value_type = T;

    constexpr result(const T& v) noexcept(std::is_nothrow_copy_constructible_v<T>)
        : value_(v), ok_(true) {}
    constexpr result(T&& v) noexcept(std::is_nothrow_move_constructible_v<T>)
        : value_(std::move(v)), ok_(true) {}
    constexpr result(failure f) noexcept : error_(f.code), ok_(false) {}

    result(const result& other) : ok_(other.ok_) {
        if (ok_) ::new (static_cast<void*>(&value_)) T(other.value_);
        else error_ = other.error_;
    }
    result(result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(other.ok_) {
        if (ok_) ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
        else error_ = other.error_;
    }
    result& operator=(const result&) = delete;
    result& operator=(result&&) = delete;
    constexpr ~result() {
        if constexpr (!std::is_trivially_destructible_v<T>) {
            if (ok_) value_.~T();
        }
    }

    constexpr bool has_value() const noexcept { return ok_; }
    constexpr explicit operator bool() const noexcept { return ok_; }

    // Reading the value of a failed result (or the error of a good one) is a
    // programming error, not an input error: a contract violation.
    constexpr T& value() & noexcept {
        Expects(ok_);
        return value_;
    }
    constexpr const T& value() const& noexcept {
        Expects(ok_);
        return value_;
    }
    constexpr T&& value() && noexcept {
        Expects(ok_);
        return std::move(value_);
    }
    constexpr error error_code() const noexcept {
        Expects(!ok_);
        return error_;
    }

    constexpr T& operator*() & noexcept { return value(); }
    constexpr const T& operator*() const& noexcept { return value(); }
    constexpr T* operator->() noexcept { return &value(); }
    constexpr const T* operator->() const noexcept { return &value(); }

private:
    union {
        T value_;
        error error_;
    };
    bool ok_;
};

template <>
class [[nodiscard]] result<void> {
public:
    constexpr result() noexcept = default;
    constexpr result(failure f) noexcept : error_(f.code), ok_(false) {}

    constexpr bool has_value() const noexcept { return ok_; }
    constexpr explicit operator bool() const noexcept { return ok_; }
    constexpr error error_code() const noexcept {
        Expects(!ok_);
        return error_;
    }

private:
    error error_{};
    bool ok_ = true;
};

using status = result<void>;

// True when `r` failed with exactly `e`; reads well in tests and call sites.
template <class T>
constexpr bool failed_with(const result<T>& r, error e) noexcept {
    return !r.has_value() && r.error_code() == e;
}

}  // namespace asreloc
