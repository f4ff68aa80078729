#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"
#include "wire/codec.hpp"
#include "wire/frame.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <utility>

using namespace preloadrun;
using namespace preloadrun::hsm;
namespace codec = preloadrun::hsm::codec;

namespace {

using testsupport::code_of;

const Bytes kHash(kTokenHashSize, 0xab);

ModuleInfo sample_module(std::uint32_t number) {
    return {number,
            "5A1C-83F2-0B1" + std::to_string(number),
            ModuleState::initialising,
            7,
            15,
            1000,
            3,
            12,
            2,
            false,
            {MechanismKind::rsa_oaep, MechanismKind::aes_gcm}};
}

KeyInfo sample_key(bool token_protected) {
    KeyInfo key;
    key.ident = "0123abcd";
    key.label = "signing key ☃";
    key.id = {1, 2, 3};
    key.type = KeyType::ec_p384;
    key.bits = 384;
    key.persistent = false;
    if (token_protected) {
        key.token = TokenInfo{TokenType::cardset, "", kHash};
    }
    key.public_der = {0x30, 0x59, 0x30};
    return key;
}

Mechanism sample_mechanism() {
    Mechanism mech;
    mech.kind = MechanismKind::aes_gcm;
    mech.hash = Hash::sha384;
    mech.mgf_hash = Hash::sha1;
    mech.salt_len = 32;
    mech.label = {'l'};
    mech.iv = Bytes(12, 0x11);
    mech.aad = {'a', 'a', 'd'};
    mech.tag_bits = 96;
    return mech;
}

// One request of every kind, each with non-default fields.
std::vector<wire::Request> every_request() {
    std::vector<wire::Request> all;
    auto add = [&](auto&& fill) {
        wire::Request r;
        r.set_id(all.size() + 1);
        fill(r);
        all.push_back(r);
    };
    add([](auto& r) { r.mutable_hello()->set_version(1), r.mutable_hello()->set_client("t"); });
    add([](auto& r) { r.mutable_list_modules(); });
    add([](auto& r) { r.mutable_get_world(); });
    add([](auto& r) { r.mutable_list_tokens(); });
    add([](auto& r) { r.mutable_list_keys(); });
    add([](auto& r) {
        auto* b = r.mutable_create_token();
        b->set_type(wire::TOKEN_SOFTCARD), b->set_name("card"), b->set_passphrase("pw");
    });
    add([](auto& r) {
        auto* b = r.mutable_load_token();
        b->set_module(2), b->set_token_hash(std::string(20, 'h')), b->set_passphrase("pw");
    });
    add([](auto& r) {
        auto* b = r.mutable_load_key();
        b->set_module(1), b->set_ident("k"), b->set_token_handle(9);
    });
    add([](auto& r) { r.mutable_unload()->set_module(1), r.mutable_unload()->set_handle(4); });
    add([](auto& r) {
        auto* b = r.mutable_generate_key();
        b->set_module(1), b->set_type(wire::KEY_RSA), b->set_bits(2048), b->set_label("l");
        b->set_id("\x01"), b->set_persistent(true), b->set_token_handle(3);
        b->set_refuse_duplicate(true);
    });
    add([](auto& r) { r.mutable_destroy_key()->set_ident("k"); });
    add([](auto& r) {
        auto* b = r.mutable_destroy_token();
        b->set_token_hash(std::string(20, 'h')), b->set_module(1), b->set_token_handle(3);
        b->set_with_keys(true);
    });
    const auto mech = codec::to_wire(sample_mechanism());
    add([&](auto& r) {
        auto* b = r.mutable_sign();
        b->set_module(1), b->set_handle(5), *b->mutable_mechanism() = mech, b->set_data("d");
    });
    add([&](auto& r) {
        auto* b = r.mutable_verify();
        b->set_module(1), b->set_handle(5), *b->mutable_mechanism() = mech, b->set_data("d");
        b->set_signature("s");
    });
    add([&](auto& r) {
        auto* b = r.mutable_encrypt();
        b->set_module(1), b->set_handle(5), *b->mutable_mechanism() = mech, b->set_data("p");
    });
    add([&](auto& r) {
        auto* b = r.mutable_decrypt();
        b->set_module(1), b->set_handle(5), *b->mutable_mechanism() = mech, b->set_data("c");
    });
    add([](auto& r) { r.mutable_random()->set_module(1), r.mutable_random()->set_length(32); });
    add([](auto& r) { r.mutable_subscribe(); });
    add([](auto& r) {
        r.mutable_control_module()->set_module(3);
        r.mutable_control_module()->set_action(wire::MODULE_RESTORE);
    });
    add([](auto& r) { r.mutable_add_module(); });
    add([](auto& r) {
        r.mutable_set_latency()->set_module(1), r.mutable_set_latency()->set_latency_ms(20);
    });
    add([](auto& r) { r.mutable_fail_next()->set_module(1), r.mutable_fail_next()->set_count(2); });
    return all;
}

// One server message of every kind: each Response body, and an Event.
std::vector<wire::ServerMessage> every_server_message() {
    std::vector<wire::Response> responses;
    auto add = [&](auto&& fill) {
        wire::Response r;
        r.set_id(responses.size() + 1);
        fill(r);
        responses.push_back(r);
    };
    add([](auto& r) {
        *r.mutable_error() = codec::error_response(0, Error(ErrorCode::crypto, "x")).error();
    });
    add([](auto& r) {
        auto* b = r.mutable_hello();
        b->set_version(1), b->set_server("hsmsim 0.1.0"), b->set_world_id("w");
    });
    add([](auto& r) { r.mutable_ok(); });
    add([](auto& r) { r.mutable_world()->set_world_id("w"), r.mutable_world()->set_modules(2); });
    add([](auto& r) { *r.mutable_modules()->add_modules() = codec::to_wire(sample_module(1)); });
    add([](auto& r) { *r.mutable_module() = codec::to_wire(sample_module(2)); });
    add([](auto& r) {
        *r.mutable_tokens()->add_tokens() =
            codec::to_wire(TokenInfo{TokenType::softcard, "a", kHash});
    });
    add([](auto& r) {
        *r.mutable_token() = codec::to_wire(TokenInfo{TokenType::cardset, "b", kHash});
    });
    add([](auto& r) { *r.mutable_keys()->add_keys() = codec::to_wire(sample_key(true)); });
    add([](auto& r) { r.mutable_handle()->set_handle(77); });
    add([](auto& r) {
        r.mutable_generated()->set_handle(8);
        *r.mutable_generated()->mutable_key() = codec::to_wire(sample_key(false));
    });
    add([](auto& r) { r.mutable_data()->set_data(std::string("\0\1\2", 3)); });

    std::vector<wire::ServerMessage> all;
    for (auto& r : responses) {
        wire::ServerMessage m;
        *m.mutable_response() = r;
        all.push_back(m);
    }
    wire::ServerMessage event;
    *event.mutable_event() =
        codec::to_wire(ModuleEvent{5, sample_module(3), ModuleState::usable, 6, false});
    all.push_back(event);
    return all;
}

} // namespace

TEST_CASE("codec round trips every request kind") {
    const auto requests = every_request();
    std::set<int> kinds;
    for (const auto& request : requests) {
        CAPTURE(request.body_case());
        const wire::Request back = codec::decode_request(codec::encode(request));
        CHECK(back.body_case() == request.body_case());
        CHECK(back.id() == request.id());
        CHECK(back.SerializeAsString() == request.SerializeAsString());
        kinds.insert(request.body_case());
    }
    CHECK(kinds.size() == 22); // every field of Request.body
}

TEST_CASE("codec round trips every server message kind") {
    const auto messages = every_server_message();
    std::set<int> kinds;
    for (const auto& message : messages) {
        const wire::ServerMessage back = codec::decode_server_message(codec::encode(message));
        CHECK(back.SerializeAsString() == message.SerializeAsString());
        if (message.has_response()) {
            kinds.insert(message.response().body_case());
        }
    }
    CHECK(kinds.size() == 12); // every field of Response.body
}

TEST_CASE("codec rejects malformed input with Error(protocol)") {
    SUBCASE("empty input: a request without a body") {
        CHECK(code_of([] { codec::decode_request({}); }) == ErrorCode::protocol);
        CHECK(code_of([] { codec::decode_server_message({}); }) == ErrorCode::protocol);
    }
    SUBCASE("a request with an id but no body") {
        wire::Request request;
        request.set_id(3);
        CHECK(code_of([&] { codec::decode_request(codec::encode(request)); }) ==
              ErrorCode::protocol);
    }
    SUBCASE("a response without a body") {
        wire::ServerMessage message;
        message.mutable_response()->set_id(1);
        CHECK(code_of([&] { codec::decode_server_message(codec::encode(message)); }) ==
              ErrorCode::protocol);
    }
    SUBCASE("a body of an unknown kind (a field this build does not know)") {
        const Bytes unknown{0xf2, 0x07, 0x00}; // field 126, length-delimited, empty
        CHECK(code_of([&] { codec::decode_request(unknown); }) == ErrorCode::protocol);
    }
    SUBCASE("garbage and truncated messages") {
        CHECK(code_of([] {
                  codec::decode_request(Bytes{0xff, 0xff, 0xff});
              }) == ErrorCode::protocol);
        Bytes sign = codec::encode(every_request()[11]);
        sign.pop_back();
        CHECK(code_of([&] { codec::decode_request(sign); }) == ErrorCode::protocol);
    }
    SUBCASE("a string field that is not UTF-8") {
        // Request{destroy_key (20): DestroyKey{ident (1): "\xff\xfe"}}, by hand.
        const Bytes bytes{0xa2, 0x01, 0x04, 0x0a, 0x02, 0xff, 0xfe};
        CHECK(code_of([&] { codec::decode_request(bytes); }) == ErrorCode::protocol);
        const Bytes good{0xa2, 0x01, 0x04, 0x0a, 0x02, 'o', 'k'};
        CHECK(codec::decode_request(good).destroy_key().ident() == "ok");
    }
    SUBCASE("random bytes either decode or throw Error(protocol), nothing else") {
        std::mt19937 rng(42);
        for (int i = 0; i < 2000; ++i) {
            Bytes bytes(rng() % 64);
            for (auto& b : bytes) {
                b = static_cast<std::uint8_t>(rng());
            }
            for (auto decode : {+[](const Bytes& b) { codec::decode_request(b); },
                                +[](const Bytes& b) { codec::decode_server_message(b); }}) {
                try {
                    decode(bytes);
                } catch (const Error& e) {
                    CHECK(e.code() == ErrorCode::protocol);
                }
            }
        }
    }
    SUBCASE("encoding a message larger than a frame: Error(limit)") {
        wire::Request request;
        request.mutable_sign()->set_data(std::string(kMaxFrame, 'x'));
        CHECK(code_of([&] { codec::encode(request); }) == ErrorCode::limit);
    }
}

TEST_CASE("codec enum conversions") {
    SUBCASE("every value survives the round trip") {
        for (auto v : {ModuleState::usable, ModuleState::initialising, ModuleState::failed,
                       ModuleState::removed}) {
            CHECK(codec::from_wire(codec::to_wire(v)) == v);
        }
        for (auto v : {TokenType::softcard, TokenType::cardset}) {
            CHECK(codec::from_wire(codec::to_wire(v)) == v);
        }
        for (auto v : {KeyType::rsa, KeyType::ec_p256, KeyType::ec_p384, KeyType::aes}) {
            CHECK(codec::from_wire(codec::to_wire(v)) == v);
        }
        for (auto v :
             {Hash::none, Hash::sha1, Hash::sha224, Hash::sha256, Hash::sha384, Hash::sha512}) {
            CHECK(codec::from_wire(codec::to_wire(v)) == v);
        }
        for (auto kind :
             {MechanismKind::rsa_pkcs1, MechanismKind::rsa_pss, MechanismKind::rsa_oaep,
              MechanismKind::ecdsa, MechanismKind::aes_gcm, MechanismKind::rsa_pkcs1_enc}) {
            Mechanism mech;
            mech.kind = kind;
            CHECK(codec::from_wire(codec::to_wire(mech)) == mech);
        }
    }
    SUBCASE("UNSPECIFIED and unknown values: Error(protocol)") {
        CHECK(code_of([] { codec::from_wire(wire::MODULE_STATE_UNSPECIFIED); }) ==
              ErrorCode::protocol);
        CHECK(code_of([] { codec::from_wire(static_cast<wire::ModuleState>(99)); }) ==
              ErrorCode::protocol);
        CHECK(code_of([] { codec::from_wire(wire::TOKEN_TYPE_UNSPECIFIED); }) ==
              ErrorCode::protocol);
        CHECK(code_of([] { codec::from_wire(wire::KEY_TYPE_UNSPECIFIED); }) == ErrorCode::protocol);
        CHECK(code_of([] { codec::from_wire(static_cast<wire::Hash>(-1)); }) ==
              ErrorCode::protocol);
        wire::Mechanism mech; // kind MECH_UNSPECIFIED
        CHECK(code_of([&] { codec::from_wire(mech); }) == ErrorCode::protocol);
    }
}

TEST_CASE("codec structure conversions") {
    SUBCASE("ModuleInfo") {
        const ModuleInfo info = sample_module(4);
        CHECK(codec::from_wire(codec::to_wire(info)) == info);
    }
    SUBCASE("ModuleInfo: a mechanism kind this side does not know is skipped") {
        auto wire_info = codec::to_wire(sample_module(5));
        wire_info.clear_lacks();
        wire_info.add_lacks(static_cast<wire::MechanismKind>(77));
        wire_info.add_lacks(wire::MECH_ECDSA);
        CHECK(codec::from_wire(wire_info).lacks == std::vector{MechanismKind::ecdsa});
    }
    SUBCASE("TokenInfo, and a hash of the wrong size") {
        const TokenInfo info{TokenType::cardset, "ops", kHash};
        CHECK(codec::from_wire(codec::to_wire(info)) == info);
        auto bad = codec::to_wire(info);
        bad.set_hash("short");
        CHECK(code_of([&] { codec::from_wire(bad); }) == ErrorCode::protocol);
    }
    SUBCASE("KeyInfo, module- and token-protected") {
        CHECK(codec::from_wire(codec::to_wire(sample_key(false))) == sample_key(false));
        CHECK(codec::from_wire(codec::to_wire(sample_key(true))) == sample_key(true));
        CHECK(codec::to_wire(sample_key(false)).token_hash().empty());
    }
    SUBCASE("Mechanism") {
        CHECK(codec::from_wire(codec::to_wire(sample_mechanism())) == sample_mechanism());
    }
    SUBCASE("Event, and an event without a previous state") {
        const ModuleEvent event{9, sample_module(1), ModuleState::failed, 6, false};
        const ModuleEvent back = codec::from_wire(codec::to_wire(event));
        CHECK(back.sequence == 9);
        CHECK(back.module == event.module);
        CHECK(back.previous_state == ModuleState::failed);
        CHECK(back.previous_generation == 6);
        CHECK_FALSE(back.snapshot);

        auto added = codec::to_wire(event);
        added.set_previous_state(wire::MODULE_STATE_UNSPECIFIED);
        CHECK(codec::from_wire(added).previous_state == event.module.state);
        added.clear_module();
        CHECK(code_of([&] { codec::from_wire(added); }) == ErrorCode::protocol);
    }
}

TEST_CASE("codec error codes") {
    SUBCASE("every code round-trips through the wire as itself, as the peer's") {
        std::set<int> on_the_wire;
        for (const ErrorInfo& row : kErrorTable) {
            CAPTURE(row.name);
            const auto message = "the service says " + std::string(row.name);
            wire::ServerMessage reply;
            *reply.mutable_response() = codec::error_response(7, Error(row.code, message));
            const auto back = codec::decode_server_message(codec::encode(reply));
            REQUIRE(back.response().has_error());
            CHECK(back.response().id() == 7);
            on_the_wire.insert(back.response().error().code());

            const Error error = codec::from_wire(back.response().error());
            CHECK(error.code() == row.code);
            CHECK(std::string(error.what()) == message);
            CHECK(error.origin() == Origin::peer);
        }
        CHECK(on_the_wire.size() == kErrorCodeCount); // no two codes merged
    }
    SUBCASE("the codes protocol 2 merged are distinct") {
        const std::pair<ErrorCode, ErrorCode> merged[] = {
            {ErrorCode::io, ErrorCode::corrupt},
            {ErrorCode::unavailable, ErrorCode::transient},
            {ErrorCode::timeout, ErrorCode::transient},
            {ErrorCode::unavailable, ErrorCode::timeout}};
        for (const auto& [a, b] : merged) {
            CHECK(codec::to_wire(a) != codec::to_wire(b));
            CHECK(codec::from_wire(codec::to_wire(a)) == a);
            CHECK(codec::from_wire(codec::to_wire(b)) == b);
        }
    }
    SUBCASE("the schema and the table name the same values") {
        for (const ErrorInfo& row : kErrorTable) {
            CAPTURE(row.name);
            CHECK(wire::ErrorCode_IsValid(static_cast<int>(row.wire)));
        }
        for (int value = wire::ErrorCode_MIN; value <= wire::ErrorCode_MAX; ++value) {
            if (!wire::ErrorCode_IsValid(value)) {
                continue;
            }
            CAPTURE(value);
            const ErrorCode code = codec::from_wire(static_cast<wire::ErrorCode>(value));
            CHECK(error_info(code).wire == static_cast<std::uint32_t>(value));
        }
        CHECK(codec::to_wire(ErrorCode::usage) == wire::ERROR_BAD_REQUEST);
        CHECK(codec::to_wire(ErrorCode::io) == wire::ERROR_IO);
        CHECK(codec::to_wire(ErrorCode::corrupt) == wire::ERROR_CORRUPT);
    }
    SUBCASE("a code unknown to this build reads as internal, with the peer's message") {
        CHECK(codec::from_wire(static_cast<wire::ErrorCode>(1234)) == ErrorCode::internal);
        CHECK(codec::from_wire(static_cast<wire::ErrorCode>(-1)) == ErrorCode::internal);
        wire::Error future;
        future.set_code(static_cast<wire::ErrorCode>(wire::ErrorCode_MAX + 1));
        future.set_message("a newer service's reason");
        wire::ServerMessage reply;
        reply.mutable_response()->set_id(3);
        *reply.mutable_response()->mutable_error() = future;
        const auto back = codec::decode_server_message(codec::encode(reply));
        const Error error = codec::from_wire(back.response().error());
        CHECK(error.code() == ErrorCode::internal);
        CHECK(error.origin() == Origin::peer);
        CHECK(std::string(error.what()) == "a newer service's reason");
    }
    SUBCASE("error_response carries id, code and message, even a message that is not UTF-8") {
        const auto response =
            codec::error_response(12, Error(ErrorCode::wrong_passphrase, "no: \xff!"));
        CHECK(response.id() == 12);
        CHECK(response.error().code() == wire::ERROR_WRONG_PASSPHRASE);
        CHECK(response.error().message() == "no: ?!");
        wire::ServerMessage message;
        *message.mutable_response() = response;
        CHECK(codec::decode_server_message(codec::encode(message)).response().error().message() ==
              "no: ?!");
    }
}
