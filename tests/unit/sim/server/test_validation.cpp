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

TEST_CASE("sim::validate::key_spec an unwrapped key") {
    wire::GenerateKey r;
    r.set_type(wire::KEY_AES);
    r.set_unwrap_with(5);
    r.set_value(std::string(24, 'w'));
    r.mutable_unwrap_mechanism()->set_kind(wire::MECH_AES_KEY_WRAP);
    SUBCASE("its size may be left to the key; its mechanism is one that unwraps") {
        const auto spec = validate::key_spec(r);
        CHECK(spec.unwrap_with == 5);
        CHECK(spec.bits == 0);
        CHECK(spec.unwrap_mechanism.kind == hsm::MechanismKind::aes_key_wrap);
        CHECK(spec.value.size() == 24);
    }
    SUBCASE("refused: no wrapped key, a mechanism that does not unwrap, an object") {
        r.clear_value();
        CHECK(code_of([&] { validate::key_spec(r); }) == ErrorCode::usage);
        r.set_value("w");
        r.mutable_unwrap_mechanism()->set_kind(wire::MECH_AES_GCM);
        r.mutable_unwrap_mechanism()->set_iv(std::string(12, 'i'));
        CHECK(code_of([&] { validate::key_spec(r); }) == ErrorCode::usage);
        r.mutable_unwrap_mechanism()->set_kind(wire::MECH_AES_KEY_WRAP);
        r.mutable_unwrap_mechanism()->clear_iv();
        r.set_type(wire::KEY_OBJECT);
        CHECK(code_of([&] { validate::key_spec(r); }) == ErrorCode::usage);
    }
    SUBCASE("a mechanism without a key to unwrap with, and a copy made extractable") {
        r.set_unwrap_with(0);
        CHECK(code_of([&] { validate::key_spec(r); }) == ErrorCode::usage);
        wire::GenerateKey copy;
        copy.set_copy_of(3);
        copy.set_extractable(true);
        CHECK(code_of([&] { validate::key_spec(copy); }) == ErrorCode::usage);
    }
}
