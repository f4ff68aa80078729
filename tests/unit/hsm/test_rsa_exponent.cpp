#include "preloadrun/hsm/rsa_exponent.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using preloadrun::hsm::rsa_public_exponent;

TEST_CASE("hsm::rsa_public_exponent") {
    SUBCASE("accepted, without its leading zero bytes") {
        CHECK(rsa_public_exponent(Bytes{0x03}).problem.empty());
        const auto f4 = rsa_public_exponent(Bytes{0x00, 0x00, 0x01, 0x00, 0x01});
        CHECK(f4.problem.empty());
        CHECK(f4.value == Bytes{0x01, 0x00, 0x01});
        CHECK(rsa_public_exponent(Bytes(32, 0xff)).problem.empty());
    }
    SUBCASE("refused: even, below 3, zero, empty, longer than 32 bytes") {
        for (const auto& e :
             {Bytes{0x01, 0x00, 0x00}, Bytes{0x01}, Bytes{0x00}, Bytes{}, Bytes(33, 0xff)}) {
            CAPTURE(e.size());
            CHECK(rsa_public_exponent(e).problem ==
                  "the public exponent must be odd, at least 3 and at most 32 bytes");
        }
    }
}
