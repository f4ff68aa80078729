#include "fake_server.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "wire/codec.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <functional>
#include <future>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::hsm;
using namespace std::chrono_literals;
using hsmtest::FakeServer;
using hsmtest::Peer;
namespace codec = preloadrun::hsm::codec;

namespace {

Error error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    }
    FAIL("no preloadrun::Error thrown");
    return Error(ErrorCode::internal, "");
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

const Bytes kHash(kTokenHashSize, 0x42);

wire::ModuleInfo module_info(std::uint32_t number, wire::ModuleState state = wire::MODULE_USABLE) {
    wire::ModuleInfo info;
    info.set_number(number);
    info.set_esn("ESN-" + std::to_string(number));
    info.set_state(state);
    info.set_generation(number * 10);
    return info;
}

wire::KeyInfo key_info() {
    KeyInfo key;
    key.ident = "abcd";
    key.label = "k1";
    key.type = KeyType::ec_p256;
    key.token = TokenInfo{TokenType::softcard, "", kHash};
    return codec::to_wire(key);
}

// A plausible hsmsim: answers every client request kind.
wire::Response fake_hsm(const wire::Request& r) {
    wire::Response out;
    switch (r.body_case()) {
    case wire::Request::kGetWorld:
        out.mutable_world()->set_world_id("W");
        out.mutable_world()->set_modules(2);
        break;
    case wire::Request::kListModules:
        *out.mutable_modules()->add_modules() = module_info(1);
        *out.mutable_modules()->add_modules() = module_info(2, wire::MODULE_FAILED);
        break;
    case wire::Request::kListTokens:
        *out.mutable_tokens()->add_tokens() =
            codec::to_wire(TokenInfo{TokenType::cardset, "ops", kHash});
        break;
    case wire::Request::kListKeys:
        *out.mutable_keys()->add_keys() = key_info();
        break;
    case wire::Request::kCreateToken:
        out.mutable_token()->set_type(r.create_token().type());
        out.mutable_token()->set_name(r.create_token().name());
        out.mutable_token()->set_hash(std::string(kHash.begin(), kHash.end()));
        break;
    case wire::Request::kLoadToken:
        out.mutable_handle()->set_handle(11);
        break;
    case wire::Request::kLoadKey:
        out.mutable_handle()->set_handle(12);
        break;
    case wire::Request::kGenerateKey:
        out.mutable_generated()->set_handle(13);
        *out.mutable_generated()->mutable_key() = key_info();
        break;
    case wire::Request::kSign:
        out.mutable_data()->set_data("sig:" + r.sign().data());
        break;
    case wire::Request::kVerify:
        if (r.verify().signature() != "good") {
            return hsmtest::error_reply(wire::ERROR_BAD_SIGNATURE, "signature does not match");
        }
        out.mutable_ok();
        break;
    case wire::Request::kEncrypt:
        out.mutable_data()->set_data("enc:" + r.encrypt().data());
        break;
    case wire::Request::kDecrypt:
        out.mutable_data()->set_data("dec:" + r.decrypt().data());
        break;
    case wire::Request::kRandom:
        out.mutable_data()->set_data(std::string(r.random().length(), 'r'));
        break;
    case wire::Request::kControlModule:
    case wire::Request::kSetLatency:
    case wire::Request::kFailNext:
    case wire::Request::kAddModule:
        *out.mutable_module() = module_info(3);
        break;
    default:
        out.mutable_ok(); // Unload, DestroyKey
    }
    return out;
}

// Handshake, answer the first request with `response` as is, then wait.
FakeServer::Script answer_once(wire::Response response) {
    return [response](Peer& peer) {
        peer.hello();
        peer.read();
        peer.reply(response);
        peer.wait_closed();
    };
}

} // namespace

TEST_CASE("hsm::SimClient handshake") {
    SUBCASE("Hello carries the protocol version and the client name") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.wait_closed();
        });
        {
            SimClient client(server.endpoint());
            CHECK(client.server_name() == "fakesim 0");
            CHECK(client.world_id() == to_bytes("WORLD"));
            CHECK(client.usable()); // open, nothing to read
        }
        server.join();
        REQUIRE(server.error() == "");
        REQUIRE(server.received().size() == 1);
        CHECK(server.received()[0].id() == 1);
        CHECK(server.received()[0].hello().version() == codec::kProtocolVersion);
        CHECK(server.received()[0].hello().client() == "test_hsm");
    }
    SUBCASE("a server of another version: Error(protocol) naming both versions") {
        FakeServer server([](Peer& peer) {
            peer.hello(codec::kProtocolVersion + 1);
            peer.wait_closed();
        });
        const Error e = error_of([&] { SimClient client(server.endpoint()); });
        CHECK(e.code() == ErrorCode::protocol);
        CHECK(contains(e.what(), "version " + std::to_string(codec::kProtocolVersion + 1)));
    }
    SUBCASE("an error reply to Hello is rethrown as is, as the service's") {
        // A timeout the service reports (something behind it did not answer)
        // is not "the service did not answer".
        for (const auto& [sent, code] : {std::pair{wire::ERROR_PROTOCOL, ErrorCode::protocol},
                                         std::pair{wire::ERROR_TIMEOUT, ErrorCode::timeout}}) {
            FakeServer server([sent = sent](Peer& peer) {
                const auto hello = peer.read();
                auto reply = hsmtest::error_reply(sent, "Hello first");
                reply.set_id(hello.id());
                peer.reply(reply);
            });
            const Error e = error_of([&] { SimClient client(server.endpoint()); });
            CHECK(e.code() == code);
            CHECK(e.origin() == Origin::peer);
            CHECK(std::string(e.what()) == "Hello first");
        }
    }
    SUBCASE("a server that never answers: Error(unavailable), it cannot be reached") {
        FakeServer server([](Peer& peer) { peer.wait_closed(); });
        const Error e = error_of([&] { SimClient client(server.endpoint(100ms)); });
        CHECK(e.code() == ErrorCode::unavailable);
        CHECK(e.origin() == Origin::local);
        CHECK(contains(e.what(), "cannot reach"));
        CHECK(contains(e.what(), "did not answer within 100 ms"));
    }
    SUBCASE("a server that closes instead of answering: Error(unavailable)") {
        FakeServer server([](Peer& peer) {
            peer.read();
            peer.close();
        });
        const Error e = error_of([&] { SimClient client(server.endpoint()); });
        CHECK(e.code() == ErrorCode::unavailable);
        CHECK(contains(e.what(), server.endpoint().socket_path));
    }
}

TEST_CASE("hsm::SimClient cannot connect") {
    testsupport::TempDir dir;
    Endpoint endpoint;
    SUBCASE("no socket at the path: Error(unavailable) naming the path and the fix") {
        endpoint.socket_path = (dir / "missing.sock").string();
        const Error e = error_of([&] { SimClient client(endpoint); });
        CHECK(e.code() == ErrorCode::unavailable);
        CHECK(contains(e.what(), endpoint.socket_path));
        CHECK(contains(e.what(), "hsmfleet serve"));
        CHECK(contains(e.what(), "HSMFLEET_SOCKET"));
        const Error admin = error_of([&] { SimAdmin client(endpoint); });
        CHECK(contains(admin.what(), "HSMFLEET_ADMIN_SOCKET"));
    }
    SUBCASE("a socket nobody listens on: Error(unavailable)") {
        endpoint.socket_path = (dir / "dead.sock").string();
        const Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, endpoint.socket_path.c_str());
        REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        const Error e = error_of([&] { SimClient client(endpoint); });
        CHECK(e.code() == ErrorCode::unavailable);
        CHECK(contains(e.what(), endpoint.socket_path));
    }
    SUBCASE("a socket not open to this user: Error(unavailable) saying so (as root)") {
        if (::geteuid() != 0) {
            MESSAGE("needs root to connect as another uid");
            return;
        }
        REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
        endpoint.socket_path = (dir / "private.sock").string();
        const Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, endpoint.socket_path.c_str());
        REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(fd.get(), 4) == 0);
        REQUIRE(::chmod(endpoint.socket_path.c_str(), 0600) == 0);
        int out[2];
        REQUIRE(::pipe(out) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            std::string seen = "no error";
            if (::setgroups(0, nullptr) != 0 || ::setresgid(2000, 2000, 2000) != 0 ||
                ::setresuid(2000, 2000, 2000) != 0) {
                ::_exit(1);
            }
            try {
                SimClient client(endpoint);
            } catch (const Error& e) {
                seen = std::string(to_string(e.code())) + ": " + e.what();
            }
            (void)!::write(out[1], seen.data(), seen.size());
            ::_exit(0);
        }
        ::close(out[1]);
        std::string seen;
        char buf[512];
        ssize_t n = 0;
        while ((n = ::read(out[0], buf, sizeof buf)) > 0) {
            seen.append(buf, static_cast<std::size_t>(n));
        }
        ::close(out[0]);
        ::waitpid(child, nullptr, 0);
        CAPTURE(seen);
        CHECK(seen.starts_with(std::string(to_string(ErrorCode::unavailable)) + ": "));
        CHECK(contains(seen, "cannot reach the HSM service at " + endpoint.socket_path));
        CHECK(contains(seen, "Permission denied"));
        CHECK(contains(seen, "not open to this user (uid 2000"));
    }
    SUBCASE("a path longer than sun_path: Error(usage)") {
        endpoint.socket_path = "/tmp/" + std::string(sizeof(sockaddr_un::sun_path), 'x');
        const Error e = error_of([&] { SimClient client(endpoint); });
        CHECK(e.code() == ErrorCode::usage);
        CHECK(contains(e.what(), "too long"));
    }
    SUBCASE("an empty path: Error(usage)") {
        CHECK(error_of([&] { SimClient client(endpoint); }).code() == ErrorCode::usage);
    }
}

TEST_CASE("hsm::SimClient requests and replies") {
    FakeServer server(hsmtest::serve(fake_hsm));
    Mechanism mech;
    mech.kind = MechanismKind::ecdsa;
    mech.hash = Hash::sha256;
    {
        std::unique_ptr<Service> service = connect(server.endpoint());
        auto& client = *service;

        CHECK(client.world().world_id == to_bytes("W"));
        const auto modules = client.modules();
        REQUIRE(modules.size() == 2);
        CHECK(modules[1].number == 2);
        CHECK(modules[1].state == ModuleState::failed);
        CHECK(modules[1].esn == "ESN-2");
        const auto tokens = client.tokens();
        REQUIRE(tokens.size() == 1);
        CHECK(tokens[0] == TokenInfo{TokenType::cardset, "ops", kHash});
        const auto keys = client.keys();
        REQUIRE(keys.size() == 1);
        CHECK(keys[0].token->hash == kHash);

        const auto created =
            client.create_token(TokenType::softcard, "card", SecureBuffer::from("s3cret"));
        CHECK(created.name == "card");
        CHECK(client.load_token(2, kHash, SecureBuffer::from("pass phrase")) == 11);
        CHECK(client.load_key(2, "abcd", 11) == 12);
        client.unload(2, 12);
        KeySpec spec;
        spec.type = KeyType::rsa;
        spec.bits = 2048;
        spec.label = "new";
        spec.id = {9};
        spec.persistent = false;
        spec.token_handle = 11;
        spec.public_exponent = {0x01, 0x00, 0x03};
        const auto generated = client.generate_key(1, spec);
        CHECK(generated.handle == 13);
        CHECK(generated.key.label == "k1");
        client.destroy_key("abcd", 2, 11);
        CHECK(client.sign(1, 12, mech, to_bytes("digest")) == to_bytes("sig:digest"));
        client.verify(1, 12, mech, to_bytes("digest"), to_bytes("good"));
        const Error bad =
            error_of([&] { client.verify(1, 12, mech, to_bytes("digest"), to_bytes("forged")); });
        CHECK(bad.code() == ErrorCode::bad_signature);
        CHECK(std::string(bad.what()) == "signature does not match");
        CHECK(client.encrypt(1, 12, mech, to_bytes("p")) == to_bytes("enc:p"));
        CHECK(client.decrypt(1, 12, mech, to_bytes("c")) == to_bytes("dec:c"));
        CHECK(client.random(1, 16) == Bytes(16, 'r'));
    }
    server.join();
    REQUIRE(server.error() == "");
    const auto& got = server.received();
    REQUIRE(got.size() == 17);

    SUBCASE("request ids increase from 1") {
        for (std::size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i].id() == i + 1);
        }
    }
    SUBCASE("the fields arrive as sent") {
        CHECK(got[5].create_token().type() == wire::TOKEN_SOFTCARD);
        CHECK(got[5].create_token().name() == "card");
        CHECK(got[5].create_token().passphrase() == "s3cret");
        CHECK(got[6].load_token().module() == 2);
        CHECK(got[6].load_token().token_hash() == std::string(kHash.begin(), kHash.end()));
        CHECK(got[6].load_token().passphrase() == "pass phrase");
        CHECK(got[7].load_key().ident() == "abcd");
        CHECK(got[7].load_key().token_handle() == 11);
        CHECK(got[8].unload().handle() == 12);
        CHECK(got[9].generate_key().type() == wire::KEY_RSA);
        CHECK(got[9].generate_key().bits() == 2048);
        CHECK(got[9].generate_key().id() == "\x09");
        CHECK_FALSE(got[9].generate_key().persistent());
        CHECK(got[9].generate_key().token_handle() == 11);
        CHECK(got[9].generate_key().public_exponent() == std::string("\x01\x00\x03", 3));
        CHECK(got[10].destroy_key().ident() == "abcd");
        CHECK(got[10].destroy_key().module() == 2);
        CHECK(got[10].destroy_key().token_handle() == 11);
        CHECK(got[3].list_tokens().after().empty());
        CHECK(got[4].list_keys().after().empty());
        CHECK(codec::from_wire(got[11].sign().mechanism()) == mech);
        CHECK(got[11].sign().handle() == 12);
        CHECK(got[16].random().length() == 16);
    }
}

TEST_CASE("hsm::SimClient failures after the handshake") {
    SUBCASE("an error reply is rethrown with its code and message; the connection stays usable") {
        FakeServer server(hsmtest::serve([](const wire::Request& r) {
            if (r.has_load_token()) {
                return hsmtest::error_reply(wire::ERROR_WRONG_PASSPHRASE, "wrong passphrase for x");
            }
            if (r.has_load_key()) { // its storage failed, not the connection
                return hsmtest::error_reply(wire::ERROR_IO, "cannot read key_abcd: I/O error");
            }
            return fake_hsm(r);
        }));
        SimClient client(server.endpoint());
        const Error e = error_of([&] { client.load_token(1, kHash, SecureBuffer::from("no")); });
        CHECK(e.code() == ErrorCode::wrong_passphrase);
        CHECK(e.origin() == Origin::peer);
        CHECK(std::string(e.what()) == "wrong passphrase for x");
        const Error io = error_of([&] { client.load_key(1, "abcd", 0); });
        CHECK(io.code() == ErrorCode::io);
        CHECK(io.origin() == Origin::peer);
        CHECK(io.retry() == Retry::final);
        CHECK(client.usable());
        CHECK(client.modules().size() == 2);
    }
    SUBCASE("no answer in time: Error(timeout), then the connection is dropped") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.wait_closed();
        });
        SimClient client(server.endpoint(100ms));
        const Error e = error_of([&] { client.modules(); });
        CHECK(e.code() == ErrorCode::timeout);
        CHECK(e.origin() == Origin::local);
        CHECK(e.retry() == Retry::connection);
        CHECK(contains(e.what(), "within 100 ms"));
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::unavailable);
    }
    SUBCASE("a key generation or a token load may take longer than a plain request's timeout") {
        FakeServer server(hsmtest::serve([](const wire::Request& r) {
            if (r.has_generate_key() || r.has_load_token() || r.has_list_modules()) {
                // An RSA-4096 key on a busy module; a member reading many objects.
                std::this_thread::sleep_for(300ms);
            }
            return fake_hsm(r);
        }));
        SimClient client(server.endpoint(100ms));
        KeySpec spec;
        spec.type = KeyType::rsa;
        spec.bits = 4096;
        CHECK(client.generate_key(1, spec).handle == 13);
        CHECK(client.load_token(2, kHash, SecureBuffer::from("pass phrase")) == 11);
        const Error e = error_of([&] { client.modules(); });
        CHECK(e.code() == ErrorCode::timeout);
        CHECK(contains(e.what(), "within 100 ms"));
    }
    SUBCASE("the server closes: Error(unavailable), and again on the next call") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.read();
            peer.close();
        });
        SimClient client(server.endpoint());
        const Error e = error_of([&] { client.modules(); });
        CHECK(e.code() == ErrorCode::unavailable);
        CHECK(e.origin() == Origin::local);
        CHECK(error_of([&] { client.tokens(); }).code() == ErrorCode::unavailable);
    }
    SUBCASE("a reply to another request id: Error(protocol)") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            const auto request = peer.read();
            auto reply = hsmtest::ok();
            reply.set_id(request.id() + 5);
            peer.reply(reply);
            peer.wait_closed();
        });
        SimClient client(server.endpoint());
        CHECK(error_of([&] { client.destroy_key("k", 0, 0); }).code() == ErrorCode::protocol);
    }
    SUBCASE("an error about the connection (id 0) is rethrown, then the connection is dropped") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.read();
            peer.reply(codec::error_response(0, Error(ErrorCode::protocol, "malformed frame")));
            peer.close();
        });
        SimClient client(server.endpoint());
        const Error e = error_of([&] { client.modules(); });
        CHECK(e.code() == ErrorCode::protocol);
        CHECK(e.origin() == Origin::peer);
        CHECK(std::string(e.what()) == "malformed frame");
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::unavailable);
    }
    SUBCASE("an error the server sent before closing, when the request could not be sent") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.reply(codec::error_response(0, Error(ErrorCode::limit, "refused: too many")));
            peer.close();
        });
        SimClient client(server.endpoint());
        server.join(); // closed before the next request: writing it fails
        CHECK_FALSE(client.usable());
        const Error e = error_of([&] { client.modules(); });
        CHECK(e.code() == ErrorCode::limit);
        CHECK(e.origin() == Origin::peer);
        CHECK(std::string(e.what()) == "refused: too many");
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::unavailable);
    }
    SUBCASE("usable() until the server closes, without waiting or sending") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.close();
        });
        SimClient client(server.endpoint());
        server.join();
        CHECK(server.received().size() == 1);
        CHECK_FALSE(client.usable());
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::unavailable);
    }
    SUBCASE("a reply of the wrong kind: Error(protocol)") {
        auto reply = hsmtest::ok();
        reply.set_id(2);
        FakeServer server(answer_once(reply));
        SimClient client(server.endpoint());
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::protocol);
    }
    SUBCASE("an event on a connection that did not subscribe: Error(protocol)") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.read();
            wire::ServerMessage event;
            *event.mutable_event()->mutable_module() = module_info(1);
            peer.send(event);
            peer.wait_closed();
        });
        SimClient client(server.endpoint());
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::protocol);
    }
    SUBCASE("object handle 0: Error(protocol)") {
        wire::Response reply;
        reply.set_id(2);
        reply.mutable_handle()->set_handle(0);
        FakeServer server(answer_once(reply));
        SimClient client(server.endpoint());
        CHECK(error_of([&] { client.load_key(1, "k", 0); }).code() == ErrorCode::protocol);
    }
    SUBCASE("garbage instead of a frame: Error(protocol)") {
        FakeServer server([](Peer& peer) {
            peer.hello();
            peer.read();
            peer.send_raw(Bytes{0, 0, 0, 3, 0xff, 0xff, 0xff});
            peer.wait_closed();
        });
        SimClient client(server.endpoint());
        CHECK(error_of([&] { client.modules(); }).code() == ErrorCode::protocol);
    }
    SUBCASE("refused before sending: a name that is not UTF-8, data larger than a frame") {
        FakeServer server(hsmtest::serve(fake_hsm));
        {
            SimClient client(server.endpoint());
            CHECK(error_of([&] {
                      client.create_token(TokenType::softcard, "\xff", SecureBuffer::from("p"));
                  }).code() == ErrorCode::usage);
            CHECK(error_of([&] { client.sign(1, 1, {}, Bytes(kMaxFrame)); }).code() ==
                  ErrorCode::limit);
            CHECK(client.modules().size() == 2); // still usable
        }
        server.join();
        REQUIRE(server.received().size() == 2); // Hello, ListModules
        CHECK(server.received()[1].has_list_modules());
    }
}

namespace {

std::string ident_of(int n) {
    std::string text = std::to_string(n);
    return std::string(40 - text.size(), '0') + text;
}

// Keys 1..total, `per_page` a page, in ident order, labelled in the other order.
wire::Response key_pages(const wire::Request& r, int total, int per_page) {
    wire::Response out;
    if (!r.has_list_keys()) {
        return fake_hsm(r);
    }
    const int first = r.list_keys().after().empty() ? 1 : std::stoi(r.list_keys().after()) + 1;
    auto* list = out.mutable_keys();
    for (int n = first; n < first + per_page && n <= total; ++n) {
        auto* key = list->add_keys();
        key->set_ident(ident_of(n));
        key->set_label("label " + std::to_string(1000 - n));
        key->set_type(wire::KEY_EC_P256);
    }
    if (first + per_page <= total) {
        list->set_next(ident_of(first + per_page - 1));
    }
    return out;
}

} // namespace

TEST_CASE("hsm::SimClient fetches every page of a listing") {
    SUBCASE("keys: every page, sorted by label as a single reply was") {
        FakeServer server(
            hsmtest::serve([](const wire::Request& r) { return key_pages(r, 10, 3); }));
        {
            SimClient client(server.endpoint());
            const auto keys = client.keys();
            REQUIRE(keys.size() == 10);
            CHECK(keys.front().ident == ident_of(10)); // "label 990" comes first
            CHECK(keys.back().ident == ident_of(1));
        }
        server.join();
        const auto& got = server.received();
        REQUIRE(got.size() == 1 + 4); // Hello, then 4 pages of 3, 3, 3, 1
        CHECK(got[1].list_keys().after().empty());
        CHECK(got[2].list_keys().after() == ident_of(3));
        CHECK(got[4].list_keys().after() == ident_of(9));
    }
    SUBCASE("tokens: every page, sorted by type then name") {
        FakeServer server(hsmtest::serve([](const wire::Request& r) {
            if (!r.has_list_tokens()) {
                return fake_hsm(r);
            }
            wire::Response out;
            const bool first = r.list_tokens().after().empty();
            *out.mutable_tokens()->add_tokens() =
                codec::to_wire(TokenInfo{first ? TokenType::cardset : TokenType::softcard,
                                         first ? "a" : "z", Bytes(kTokenHashSize, first ? 1 : 2)});
            if (first) {
                out.mutable_tokens()->set_next(to_hex(Bytes(kTokenHashSize, 1)));
            }
            return out;
        }));
        SimClient client(server.endpoint());
        const auto tokens = client.tokens();
        REQUIRE(tokens.size() == 2);
        CHECK(tokens[0].name == "z"); // softcards before card sets
        CHECK(tokens[1].name == "a");
    }
    SUBCASE("a cursor that does not advance: Error(protocol), not a loop") {
        FakeServer server(hsmtest::serve([](const wire::Request& r) {
            wire::Response out = key_pages(r, 10, 3);
            if (r.has_list_keys()) {
                out.mutable_keys()->set_next(r.list_keys().after().empty() ? ident_of(3)
                                                                           : r.list_keys().after());
            }
            return out;
        }));
        SimClient client(server.endpoint());
        const Error e = error_of([&] { client.keys(); });
        CHECK(e.code() == ErrorCode::protocol);
        CHECK(contains(e.what(), "does not advance"));
    }
}

TEST_CASE("hsm::SimAdmin") {
    FakeServer server(hsmtest::serve(fake_hsm));
    {
        SimAdmin admin(server.endpoint());
        CHECK(admin.modules().size() == 2);
        for (auto action : {ModuleAction::clear, ModuleAction::fail, ModuleAction::restore,
                            ModuleAction::remove}) {
            CHECK(admin.control(1, action).number == 3);
        }
        CHECK(admin.add_module().number == 3);
        CHECK(admin.set_latency(2, 25).number == 3);
        CHECK(admin.fail_next(2, 4).number == 3);
    }
    server.join();
    REQUIRE(server.error() == "");
    const auto& got = server.received();
    REQUIRE(got.size() == 9);
    CHECK(got[2].control_module().action() == wire::MODULE_CLEAR);
    CHECK(got[3].control_module().action() == wire::MODULE_FAIL);
    CHECK(got[4].control_module().action() == wire::MODULE_RESTORE);
    CHECK(got[5].control_module().action() == wire::MODULE_REMOVE);
    CHECK(got[6].has_add_module());
    CHECK(got[7].set_latency().latency_ms() == 25);
    CHECK(got[8].fail_next().count() == 4);
}

TEST_CASE("hsm::subscribe") {
    std::promise<void> go;
    std::promise<void> done;
    auto go_signal = go.get_future().share();
    auto done_signal = done.get_future().share();
    auto event = [](std::uint64_t sequence, wire::ModuleState state) {
        wire::ServerMessage message;
        auto* e = message.mutable_event();
        e->set_sequence(sequence);
        *e->mutable_module() = module_info(2, state);
        e->set_previous_state(wire::MODULE_USABLE);
        e->set_previous_generation(20);
        return message;
    };
    auto subscribed = [&](Peer& peer) {
        peer.hello();
        const auto request = peer.read();
        REQUIRE(request.has_subscribe());
        wire::Response reply;
        reply.set_id(request.id());
        *reply.mutable_modules()->add_modules() = module_info(1);
        *reply.mutable_modules()->add_modules() = module_info(2);
        peer.reply(reply);
    };
    auto readable = [](int fd, int ms) {
        pollfd pfd{fd, POLLIN, 0};
        return ::poll(&pfd, 1, ms) == 1;
    };

    SUBCASE("the snapshot comes in the reply, then live events in order") {
        FakeServer server([&](Peer& peer) {
            subscribed(peer);
            go_signal.wait();
            peer.send(event(1, wire::MODULE_FAILED));
            peer.send(event(2, wire::MODULE_INITIALISING));
            done_signal.wait();
        });
        auto stream = subscribe(server.endpoint());
        REQUIRE(stream->snapshot().size() == 2);
        CHECK(stream->snapshot()[0].number == 1);
        CHECK(stream->snapshot()[1].esn == "ESN-2");
        CHECK_FALSE(stream->next(0ms));
        CHECK_FALSE(readable(stream->fd(), 0));

        go.set_value();
        const auto first = stream->next(5s);
        REQUIRE(first);
        CHECK(first->sequence == 1);
        CHECK(first->module.state == ModuleState::failed);
        CHECK(first->previous_state == ModuleState::usable);
        CHECK(first->previous_generation == 20);
        CHECK_FALSE(first->snapshot);
        REQUIRE(readable(stream->fd(), 5000)); // the second one is announced by the fd
        const auto second = stream->next(0ms);
        REQUIRE(second);
        CHECK(second->sequence == 2);
        CHECK_FALSE(readable(stream->fd(), 0));
        CHECK_FALSE(stream->next(10ms));

        done.set_value();
        const Error e = error_of([&] { stream->next(5s); });
        CHECK(e.code() == ErrorCode::unavailable);
    }
    SUBCASE("an error sent on the stream is rethrown") {
        FakeServer server([&](Peer& peer) {
            subscribed(peer);
            peer.reply(hsmtest::error_reply(wire::ERROR_TRANSIENT, "service shutting down"));
            done_signal.wait();
        });
        auto stream = subscribe(server.endpoint());
        const Error e = error_of([&] { stream->next(5s); });
        CHECK(e.code() == ErrorCode::transient);
        CHECK(std::string(e.what()) == "service shutting down");
        done.set_value();
    }
}

TEST_CASE("hsm::subscribe on an open connection makes no other") {
    std::promise<void> done;
    auto done_signal = done.get_future().share();
    // One connection only: a second one would find no script answering its
    // handshake.
    FakeServer server([&](Peer& peer) {
        peer.hello();
        auto request = peer.read();
        REQUIRE(request.has_list_modules());
        wire::Response listed;
        listed.set_id(request.id());
        *listed.mutable_modules()->add_modules() = module_info(1);
        peer.reply(listed);
        request = peer.read();
        REQUIRE(request.has_subscribe());
        wire::Response snapshot;
        snapshot.set_id(request.id());
        *snapshot.mutable_modules()->add_modules() = module_info(1);
        *snapshot.mutable_modules()->add_modules() = module_info(2);
        peer.reply(snapshot);
        wire::ServerMessage message;
        message.mutable_event()->set_sequence(1);
        *message.mutable_event()->mutable_module() = module_info(2, wire::MODULE_FAILED);
        peer.send(message);
        done_signal.wait();
    });
    auto client = std::make_unique<SimClient>(server.endpoint(500ms));
    CHECK(client->modules().size() == 1);
    auto stream = subscribe(std::move(client), server.endpoint(500ms));
    REQUIRE(stream->snapshot().size() == 2);
    const auto event = stream->next(5s);
    REQUIRE(event);
    CHECK(event->module.state == ModuleState::failed);
    done.set_value();
    server.join();
    CHECK(server.error() == "");
    REQUIRE(server.received().size() == 3); // Hello, ListModules, Subscribe
}
