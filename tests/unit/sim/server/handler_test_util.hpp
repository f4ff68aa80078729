#pragma once
// What the handler's tests share: a handler over a world of two simulated
// modules, called through the codec as over a socket, and a client's view of
// it as one uid (As).

#include "server/handler.hpp"
#include "sim_test_util.hpp"
#include "support/temp_dir.hpp"
#include "wire/codec.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <string>

namespace handlertest {

using namespace preloadrun;
using namespace preloadrun::sim;

inline const Peer kClient{1000, 42, false};
inline const Peer kAdmin{1000, 42, true};
inline constexpr uid_t kServiceUid = 2100; // the uid hsmsim runs as, in these tests

struct Setup {
    testsupport::TempDir tmp;
    std::unique_ptr<World> world;
    std::unique_ptr<SimulatedModules> sims;
    std::unique_ptr<Fleet> fleet;
    std::unique_ptr<Destroyer> destroyer;
    std::unique_ptr<Handler> handler;
    std::uint64_t next_id = 1;
    explicit Setup(PageLimits pages = {}, const ObjectLimits& objects = {}) {
        world = simtest::make_world(tmp.path());
        world->enrol_module();
        world->enrol_module();
        // A long initialisation delay: a test that clears a module sees it
        // initialising however slow the build (ASan) is.
        sims = std::make_unique<SimulatedModules>(*world);
        fleet = std::make_unique<Fleet>(*world, FleetOptions{0, 60000, objects}, sims->factory());
        destroyer = std::make_unique<Destroyer>(*world, *fleet, kServiceUid);
        handler = std::make_unique<Handler>(*world, *fleet, destroyer.get(), pages);
    }
    // Through the codec both ways, as over a socket.
    wire::Response call(wire::Request request, const Peer& peer = kClient) {
        request.set_id(next_id++);
        auto decoded = hsm::codec::decode_request(hsm::codec::encode(request));
        wire::ServerMessage message;
        *message.mutable_response() = handler->handle(decoded, peer);
        auto back = hsm::codec::decode_server_message(hsm::codec::encode(message));
        REQUIRE(back.has_response());
        CHECK(back.response().id() == request.id());
        return back.response();
    }
};

inline wire::ErrorCode error_of(const wire::Response& r) {
    REQUIRE(r.has_error());
    return r.error().code();
}

inline std::string field(const Bytes& b) {
    return std::string(b.begin(), b.end());
}

inline const Peer kVictim{2000, 10, false};
inline const Peer kAttacker{2001, 11, false};
inline const Peer kRoot{0, 12, false};
inline const Peer kService{kServiceUid, 13, false};

// A client's view of the world through the handler, as one uid.
struct As {
    Setup& s;
    Peer peer;

    std::string create_token(const std::string& name, const std::string& pw) {
        wire::Request r;
        r.mutable_create_token()->set_type(wire::TOKEN_SOFTCARD);
        r.mutable_create_token()->set_name(name);
        r.mutable_create_token()->set_passphrase(pw);
        auto out = s.call(r, peer);
        REQUIRE(out.has_token());
        return out.token().hash();
    }
    std::uint64_t load_token(std::uint32_t module, const std::string& hash, const std::string& pw) {
        wire::Request r;
        r.mutable_load_token()->set_module(module);
        r.mutable_load_token()->set_token_hash(hash);
        r.mutable_load_token()->set_passphrase(pw);
        auto out = s.call(r, peer);
        REQUIRE(out.has_handle());
        return out.handle().handle();
    }
    wire::Response generate_response(std::uint64_t token_handle, std::uint32_t module = 1,
                                     const std::string& label = "k",
                                     bool refuse_duplicate = false) {
        wire::Request r;
        auto* g = r.mutable_generate_key();
        g->set_module(module);
        g->set_type(wire::KEY_EC_P256);
        g->set_label(label);
        g->set_persistent(true);
        g->set_token_handle(token_handle);
        g->set_refuse_duplicate(refuse_duplicate);
        return s.call(r, peer);
    }
    wire::GeneratedKey generate_key(std::uint64_t token_handle, std::uint32_t module = 1) {
        auto out = generate_response(token_handle, module);
        REQUIRE(out.has_generated());
        return out.generated();
    }
    std::string generate(std::uint64_t token_handle, std::uint32_t module = 1) {
        return generate_key(token_handle, module).key().ident();
    }
    wire::Response load_key(std::uint32_t module, const std::string& ident,
                            std::uint64_t token_handle = 0) {
        wire::Request r;
        r.mutable_load_key()->set_module(module);
        r.mutable_load_key()->set_ident(ident);
        r.mutable_load_key()->set_token_handle(token_handle);
        return s.call(r, peer);
    }
    wire::Response load_token_response(std::uint32_t module, const std::string& hash,
                                       const std::string& pw) {
        wire::Request r;
        r.mutable_load_token()->set_module(module);
        r.mutable_load_token()->set_token_hash(hash);
        r.mutable_load_token()->set_passphrase(pw);
        return s.call(r, peer);
    }
    wire::Response sign(std::uint32_t module, std::uint64_t key) {
        wire::Request r;
        r.mutable_sign()->set_module(module);
        r.mutable_sign()->set_handle(key);
        r.mutable_sign()->mutable_mechanism()->set_kind(wire::MECH_ECDSA);
        r.mutable_sign()->set_data(std::string(32, 'd'));
        return s.call(r, peer);
    }
    wire::Response destroy(const std::string& ident, std::uint32_t module = 0,
                           std::uint64_t token_handle = 0) {
        wire::Request r;
        r.mutable_destroy_key()->set_ident(ident);
        r.mutable_destroy_key()->set_module(module);
        r.mutable_destroy_key()->set_token_handle(token_handle);
        return s.call(r, peer);
    }
    wire::Response destroy_token(const std::string& hash, std::uint32_t module = 0,
                                 std::uint64_t token_handle = 0, bool with_keys = false) {
        wire::Request r;
        r.mutable_destroy_token()->set_token_hash(hash);
        r.mutable_destroy_token()->set_module(module);
        r.mutable_destroy_token()->set_token_handle(token_handle);
        r.mutable_destroy_token()->set_with_keys(with_keys);
        return s.call(r, peer);
    }
};

inline bool key_exists(Setup& s, const std::string& ident) {
    return std::filesystem::exists(s.tmp / ("key_" + ident));
}

} // namespace handlertest
