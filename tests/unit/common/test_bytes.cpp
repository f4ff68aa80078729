#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;

TEST_CASE("common::to_hex and from_hex") {
    SUBCASE("round trip of every byte value") {
        Bytes all(256);
        for (int i = 0; i < 256; ++i) {
            all[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
        }
        auto hex = to_hex(all);
        CHECK(hex.size() == 512);
        CHECK(hex.substr(0, 8) == "00010203");
        CHECK(from_hex(hex) == all);
    }
    SUBCASE("upper case is accepted") {
        CHECK(from_hex("ABcd") == Bytes{0xab, 0xcd});
    }
    SUBCASE("empty") {
        CHECK(to_hex(Bytes{}).empty());
        CHECK(from_hex("").empty());
    }
    SUBCASE("odd length and bad characters are usage errors") {
        for (const char* bad : {"abc", "zz", "0g", " 00", "0x00"}) {
            CAPTURE(bad);
            CHECK_FALSE(is_hex(bad));
            try {
                from_hex(bad);
                FAIL("accepted " << bad);
            } catch (const Error& e) {
                CHECK(e.code() == ErrorCode::usage);
            }
        }
    }
}
