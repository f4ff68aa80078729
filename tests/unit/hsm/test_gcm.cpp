#include "preloadrun/hsm/mechanism_params.hpp"

#include <doctest/doctest.h>

using namespace preloadrun::hsm;

TEST_CASE("hsm::gcm_parameter_problem") {
    SUBCASE("IV sizes: 12 to 128 bytes") {
        for (std::size_t iv :
             {std::size_t{12}, std::size_t{16}, std::size_t{60}, std::size_t{128}}) {
            CHECK(gcm_parameter_problem(iv, 128).empty());
        }
        for (std::size_t iv : {std::size_t{0}, std::size_t{1}, std::size_t{8}, std::size_t{11},
                               std::size_t{129}, std::size_t{4096}}) {
            const auto problem = gcm_parameter_problem(iv, 128);
            CHECK(problem == "AES-GCM IV of " + std::to_string(iv) +
                                 " bytes refused: it must be 12 to 128 bytes (12 recommended)");
        }
    }
    SUBCASE("tag sizes: 96, 104, 112, 120 or 128 bits") {
        for (std::uint32_t tag : {96u, 104u, 112u, 120u, 128u}) {
            CHECK(gcm_tag_bits_allowed(tag));
            CHECK(gcm_parameter_problem(12, tag).empty());
        }
        for (std::uint32_t tag : {0u, 32u, 64u, 88u, 100u, 136u, 256u}) {
            CHECK_FALSE(gcm_tag_bits_allowed(tag));
            CHECK(gcm_parameter_problem(12, tag) ==
                  "AES-GCM tag of " + std::to_string(tag) +
                      " bits refused: it must be 96, 104, 112, 120 or 128 bits");
        }
    }
}
