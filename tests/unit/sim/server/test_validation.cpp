#include "preloadrun/common/error.hpp"
#include "server/validation.hpp"
#include "support/errors.hpp"
#include "wire.pb.h"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;
using testsupport::code_of;

namespace {

wire::Mechanism gcm(std::size_t iv_bytes, std::uint32_t tag_bits) {
    wire::Mechanism m;
    m.set_kind(wire::MECH_AES_GCM);
    m.set_iv(std::string(iv_bytes, 'i'));
    m.set_tag_bits(tag_bits);
    return m;
}

std::string message_of(const wire::Mechanism& m) {
    try {
        validate::mechanism(m);
    } catch (const Error& e) {
        return e.what();
    }
    return {};
}

} // namespace

TEST_CASE("sim::validate::mechanism AES-GCM parameters") {
    SUBCASE("safe sizes pass; tag 0 means 128 bits") {
        CHECK(validate::mechanism(gcm(12, 96)).tag_bits == 96);
        CHECK(validate::mechanism(gcm(128, 120)).iv.size() == 128);
        CHECK(validate::mechanism(gcm(12, 0)).tag_bits == 128);
    }
    SUBCASE("a short or long IV is refused as bad usage, saying what is accepted") {
        CHECK(code_of([] { validate::mechanism(gcm(8, 128)); }) == ErrorCode::usage);
        CHECK(code_of([] { validate::mechanism(gcm(0, 128)); }) == ErrorCode::usage);
        CHECK(code_of([] { validate::mechanism(gcm(129, 128)); }) == ErrorCode::usage);
        CHECK(message_of(gcm(8, 128)).find("12 to 128 bytes") != std::string::npos);
    }
    SUBCASE("a short or odd tag is refused") {
        for (std::uint32_t tag : {32u, 64u, 100u, 136u}) {
            CHECK(code_of([&] { validate::mechanism(gcm(12, tag)); }) == ErrorCode::usage);
        }
        CHECK(message_of(gcm(12, 64)).find("96, 104, 112, 120 or 128 bits") != std::string::npos);
    }
    SUBCASE("other mechanisms do not care about IVs") {
        wire::Mechanism ecdsa;
        ecdsa.set_kind(wire::MECH_ECDSA);
        ecdsa.set_hash(wire::HASH_SHA256);
        CHECK(validate::mechanism(ecdsa).kind == hsm::MechanismKind::ecdsa);
    }
}
