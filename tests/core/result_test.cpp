#include <catch2/catch.hpp>

#include "asreloc/core/result.hpp"

using namespace asreloc;

namespace {
result<int> half(int v) {
    if (v % 2 != 0) return failure(error::misaligned);
    return v / 2;
}
}  // namespace

TEST_CASE("a result holds either a value or the precise error") {
    const auto good = half(8);
    REQUIRE(good.has_value());
    CHECK(*good == 4);

    const auto bad = half(7);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error_code() == error::misaligned);
    CHECK(failed_with(bad, error::misaligned));
    CHECK_FALSE(failed_with(good, error::misaligned));
}

TEST_CASE("a status reports success or an error without a value") {
    status ok;
    status bad = failure(error::out_of_frames);
    CHECK(ok.has_value());
    CHECK(failed_with(bad, error::out_of_frames));
}

TEST_CASE("every error has a distinct name") {
    for (int a = 0; a <= static_cast<int>(error::out_of_bounds); ++a)
        for (int b = a + 1; b <= static_cast<int>(error::out_of_bounds); ++b)
            CHECK(std::string_view{to_string(static_cast<error>(a))} !=
                  std::string_view{to_string(static_cast<error>(b))});
}
