#include "preloadrun/hsm/sim_client.hpp"
#include "server/server.hpp"
#include "sim_test_util.hpp"
#include "support/temp_dir.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::sim;
using namespace std::chrono_literals;

namespace {

// A Server on temporary sockets, run by a thread until the fixture goes.
struct Running {
    testsupport::TempDir tmp;
    ServeOptions options;
    std::unique_ptr<Server> server;
    Fd stop{::eventfd(0, EFD_CLOEXEC)};
    std::thread thread;

    explicit Running(ServerTuning tuning = {}, std::uint32_t modules = 2,
                     const std::function<void(ServeOptions&)>& adjust = {}) {
        options.kmdata = tmp / "kmdata";
        options.socket = tmp / "run" / "socket";
        options.admin_socket = tmp / "admin" / "socket";
        options.modules = modules;
        options.init_delay_ms = 20;
        if (adjust) {
            adjust(options);
        }
        tuning.kdf_iterations = simtest::kFastKdf;
        server = std::make_unique<Server>(options, tuning);
        thread = std::thread([this] { server->run(stop.get()); });
    }
    ~Running() { shutdown(); }
    void shutdown() {
        if (thread.joinable()) {
            std::uint64_t one = 1;
            (void)!::write(stop.get(), &one, sizeof one);
            thread.join();
        }
    }
    hsm::Endpoint client() const { return {options.socket.string(), 5000ms, "test"}; }
    hsm::Endpoint admin() const { return {options.admin_socket.string(), 5000ms, "test"}; }
};

// A raw connection speaking frames.
struct Raw {
    Fd fd;
    hsm::FrameReader reader;
    explicit Raw(const std::filesystem::path& path) : fd(connect_unix(path)) { REQUIRE(fd); }
    void send(const wire::Request& request) {
        hsm::write_frame(fd.get(), hsm::codec::encode(request),
                         std::chrono::steady_clock::now() + 2s);
    }
    void send_raw(const Bytes& bytes) {
        REQUIRE(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(bytes.size()));
    }
    wire::ServerMessage receive() {
        return hsm::codec::decode_server_message(
            hsm::read_frame(fd.get(), reader, std::chrono::steady_clock::now() + 3s));
    }
    wire::Response call(const wire::Request& request) {
        send(request);
        auto message = receive();
        REQUIRE(message.has_response());
        return message.response();
    }
    void hello() {
        wire::Request r;
        r.mutable_hello()->set_version(hsm::codec::kProtocolVersion);
        REQUIRE(call(r).has_hello());
    }
    // True when the server closed the connection.
    bool closed() {
        try {
            receive();
        } catch (const Error& e) {
            return e.code() == ErrorCode::unavailable;
        }
        return false;
    }
};

wire::Request list_modules() {
    wire::Request r;
    r.set_id(7);
    r.mutable_list_modules();
    return r;
}

} // namespace

TEST_CASE("sim::Server ready line, sockets, and a clean stop") {
    Running s;
    CHECK(s.server->ready_line() ==
          "hsmfleet: ready: 2 modules, world " + to_hex(s.server->world()->id()) + ", socket " +
              s.options.socket.string() + ", admin socket " + s.options.admin_socket.string());
    CHECK(simtest::file_mode(s.options.socket) == 0660);
    CHECK(simtest::file_mode(s.options.admin_socket) == 0600);
    CHECK(simtest::file_mode(s.options.admin_socket.parent_path()) == 0700);
    Raw idle(s.options.socket); // an open connection does not hold up the stop
    idle.hello();
    s.shutdown();
    CHECK_FALSE(std::filesystem::exists(s.options.socket));
    CHECK_FALSE(std::filesystem::exists(s.options.admin_socket));
    CHECK(std::filesystem::exists(s.options.kmdata / "world"));
    CHECK(idle.closed());
}

TEST_CASE("sim::Server a second server on the same world or socket is refused") {
    Running s;
    ServeOptions other = s.options;
    other.kmdata = s.tmp / "other-world";
    try {
        Server second(other);
        FAIL("started twice on one socket");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::already_exists);
    }
    other = s.options;
    other.socket = s.tmp / "s2";
    other.admin_socket = s.tmp / "a2";
    try {
        Server second(other);
        FAIL("started twice on one world");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::already_exists);
    }
}

TEST_CASE("sim::Server refuses a per-uid object share out of range, leaving nothing") {
    testsupport::TempDir tmp;
    ServeOptions options;
    options.kmdata = tmp / "kmdata";
    options.socket = tmp / "socket";
    options.admin_socket = tmp / "admin";
    for (std::uint32_t bad : {0u, static_cast<std::uint32_t>(kMaxObjectsPerModule) + 1}) {
        options.max_objects_per_uid = bad;
        try {
            Server server(options);
            FAIL("started with --max-objects-per-uid " << bad);
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::usage);
            CHECK(std::string(e.what()).find("--max-objects-per-uid") != std::string::npos);
        }
        CHECK_FALSE(std::filesystem::exists(options.kmdata));
    }
}

TEST_CASE("sim::Server the first request must be Hello") {
    Running s;
    Raw raw(s.options.socket);
    auto response = raw.call(list_modules());
    REQUIRE(response.has_error());
    CHECK(response.error().code() == wire::ERROR_PROTOCOL);
    CHECK(response.id() == 7);
    CHECK(raw.closed());

    Raw old(s.options.socket);
    wire::Request hello;
    hello.mutable_hello()->set_version(hsm::codec::kProtocolVersion + 1);
    CHECK(old.call(hello).error().code() == wire::ERROR_PROTOCOL);
    CHECK(old.closed());
}

TEST_CASE("sim::Server a malformed frame closes that connection only") {
    Running s;
    Raw good(s.options.socket);
    good.hello();
    SUBCASE("undecodable message") {
        Raw bad(s.options.socket);
        bad.hello();
        bad.send_raw(hsm::encode_frame(Bytes{0xff, 0xff, 0xff, 0xff}));
        auto m = bad.receive();
        REQUIRE(m.has_response());
        CHECK(m.response().error().code() == wire::ERROR_PROTOCOL);
        CHECK(bad.closed());
    }
    SUBCASE("oversized header") {
        Raw bad(s.options.socket);
        bad.send_raw(Bytes{0x7f, 0xff, 0xff, 0xff});
        auto m = bad.receive();
        CHECK(m.response().error().code() == wire::ERROR_PROTOCOL);
        CHECK(bad.closed());
    }
    SUBCASE("empty request") {
        Raw bad(s.options.socket);
        bad.send_raw(hsm::encode_frame(Bytes{}));
        CHECK(bad.receive().response().error().code() == wire::ERROR_PROTOCOL);
        CHECK(bad.closed());
    }
    CHECK(good.call(list_modules()).modules().modules_size() == 2);
}

TEST_CASE("sim::Server a stalled partial frame is dropped; idle connections stay") {
    ServerTuning tuning;
    tuning.limits.partial_frame_timeout = 200ms;
    Running s(tuning);
    Raw idle(s.options.socket);
    idle.hello();
    Raw stalled(s.options.socket);
    stalled.send_raw(Bytes{0, 0, 0, 10, 1});
    CHECK(stalled.closed());
    std::this_thread::sleep_for(300ms);
    CHECK(idle.call(list_modules()).has_modules());
}

TEST_CASE("sim::Server: a partial frame's deadline holds however slowly its bytes trickle in") {
    ServerTuning tuning;
    tuning.limits.partial_frame_timeout = 200ms;
    Running s(tuning);
    Raw slow(s.options.socket);
    slow.hello();
    const auto start = std::chrono::steady_clock::now();
    slow.send_raw(Bytes{0, 0, 0x03, 0xe8}); // a frame of 1,000 bytes, then one byte per 50 ms
    const std::uint8_t byte = 1;
    for (int i = 0; i < 30; ++i) { // 1.5 s of bytes, if the server let it go on
        if (::send(slow.fd.get(), &byte, 1, MSG_NOSIGNAL) != 1) {
            break; // closed by the server
        }
        std::this_thread::sleep_for(50ms);
    }
    CHECK(slow.closed());
    CHECK(std::chrono::steady_clock::now() - start < 1s);
}

TEST_CASE("sim::Server answers requests sent together, in order") {
    Running s;
    Raw raw(s.options.socket);
    raw.hello();
    Bytes both;
    for (std::uint64_t id : {21, 22, 23}) {
        auto request = list_modules();
        request.set_id(id);
        const Bytes frame = hsm::encode_frame(hsm::codec::encode(request));
        both.insert(both.end(), frame.begin(), frame.end());
    }
    raw.send_raw(both); // one write: the server reads them with one recv()
    for (std::uint64_t id : {21, 22, 23}) {
        auto message = raw.receive();
        REQUIRE(message.has_response());
        CHECK(message.response().id() == id);
        CHECK(message.response().modules().modules_size() == 2);
    }
}

TEST_CASE("sim::Server caps concurrent connections politely") {
    // This test's uid is the service's: it may use every connection.
    ServerTuning tuning;
    tuning.reserved_connections = 1;
    Running s(tuning, 2, [](ServeOptions& o) {
        o.max_connections = 2;
        o.max_connections_per_uid = 1;
    });
    Raw a(s.options.socket);
    a.hello();
    Raw b(s.options.socket);
    b.hello();
    Raw c(s.options.socket);
    auto m = c.receive();
    REQUIRE(m.has_response());
    CHECK(m.response().error().code() == wire::ERROR_LIMIT);
    CHECK(m.response().error().message() ==
          "hsmfleet already serves 2 connections, the most it serves at once (hsmfleet serve "
          "--max-connections 2); try again later");
    CHECK(c.closed());
    a.fd.reset();
    // Once the server has noticed that `a` went, there is room again.
    REQUIRE(simtest::eventually([&] {
        try {
            Raw d(s.options.socket);
            wire::Request hello;
            hello.mutable_hello()->set_version(hsm::codec::kProtocolVersion);
            d.send(hello);
            return d.receive().response().has_hello();
        } catch (const Error&) {
            return false; // refused: not yet
        }
    }));
}

TEST_CASE("sim::Server the admin socket has its own budget, apart from the client socket's") {
    ServerTuning tuning;
    tuning.reserved_connections = 1;
    tuning.max_admin_connections = 1;
    Running s(tuning, 2, [](ServeOptions& o) {
        o.max_connections = 2;
        o.max_connections_per_uid = 1;
    });
    Raw a(s.options.socket);
    a.hello();
    Raw b(s.options.socket);
    b.hello();
    Raw admin(s.options.admin_socket); // the client socket is full
    admin.hello();
    Raw second(s.options.admin_socket);
    auto m = second.receive();
    REQUIRE(m.has_response());
    CHECK(m.response().error().code() == wire::ERROR_LIMIT);
    CHECK(m.response().error().message().find("the admin socket already serves 1 connections") ==
          0);
    wire::Request add;
    add.mutable_add_module();
    CHECK(admin.call(add).module().number() == 3);
}

TEST_CASE("sim::Server refuses connection limits that leave no share, leaving nothing") {
    testsupport::TempDir tmp;
    ServeOptions options;
    options.kmdata = tmp / "kmdata";
    options.socket = tmp / "socket";
    options.admin_socket = tmp / "admin";
    options.max_connections = 32;
    options.max_connections_per_uid = 17; // more than the 16 the other users share
    try {
        Server server(options);
        FAIL("started with --max-connections-per-uid 17 of 16");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::usage);
        CHECK(std::string(e.what()).find("--max-connections-per-uid must be 1 to 16") == 0);
    }
    CHECK_FALSE(std::filesystem::exists(options.kmdata));
    CHECK_FALSE(std::filesystem::exists(options.socket));
}

TEST_CASE("sim::Server closes idle connections, but not a subscription nor the one that keeps "
          "a process's objects") {
    Running s({}, 2, [](ServeOptions& o) { o.idle_timeout = 1000ms; });
    const pid_t me = ::getpid();

    SUBCASE("a process that loaded nothing: every idle connection goes, a subscription stays") {
        Raw silent(s.options.socket); // not even a Hello
        Raw idle(s.options.socket);
        idle.hello();
        Raw busy(s.options.socket);
        busy.hello();
        Raw subscriber(s.options.socket);
        subscriber.hello();
        wire::Request subscribe;
        subscribe.set_id(3);
        subscribe.mutable_subscribe();
        REQUIRE(subscriber.call(subscribe).has_modules());
        // `busy` keeps asking, more often than the idle timeout.
        for (int i = 0; i < 15; ++i) {
            std::this_thread::sleep_for(100ms);
            REQUIRE(busy.call(list_modules()).has_modules());
        }
        CHECK(silent.closed());
        CHECK(idle.closed());
        REQUIRE(simtest::eventually([&] { return s.server->clients().connections(me) == 2; }, 10s));
        std::this_thread::sleep_for(1200ms);
        // The subscription still gets events, long past the idle timeout.
        hsm::SimAdmin admin(s.admin());
        admin.control(1, hsm::ModuleAction::clear);
        auto event = subscriber.receive();
        REQUIRE(event.has_event());
        CHECK(event.event().module().number() == 1);
    }
    SUBCASE("a process that loaded: its oldest connection stays, with its objects") {
        auto keeper = std::make_unique<hsm::SimClient>(s.client()); // opened first
        auto loader = std::make_unique<hsm::SimClient>(s.client());
        auto card =
            loader->create_token(hsm::TokenType::softcard, "card", SecureBuffer::from("pw"));
        const auto handle = loader->load_token(1, card.hash, SecureBuffer::from("pw"));
        REQUIRE(simtest::eventually([&] { return s.server->clients().connections(me) == 2; }));
        // The loader, idle and not the oldest, goes; the keeper stays, past
        // several idle timeouts, and so does what the process loaded.
        REQUIRE(simtest::eventually([&] { return s.server->clients().connections(me) == 1; }, 10s));
        CHECK_FALSE(loader->usable());
        std::this_thread::sleep_for(2500ms);
        CHECK(s.server->clients().connections(me) == 1);
        CHECK(keeper->usable());
        CHECK(s.server->fleet().list()[0].objects == 1);
        Bytes random = keeper->random(1, 8); // the connection still serves
        CHECK(random.size() == 8);
        CHECK_NOTHROW(keeper->unload(1, handle)); // the object is still there
        // Unloaded, the process still counts as one that loaded: it may load again.
        std::this_thread::sleep_for(1500ms);
        CHECK(keeper->usable());
        keeper.reset();
        CHECK(simtest::eventually([&] { return s.server->clients().connections(me) == 0; }));
    }
}

TEST_CASE("sim::Server with --idle-timeout 0 an idle connection stays") {
    ServerTuning tuning;
    Running s(tuning, 2, [](ServeOptions& o) { o.idle_timeout = 0ms; });
    Raw idle(s.options.socket);
    idle.hello();
    std::this_thread::sleep_for(500ms);
    CHECK(idle.call(list_modules()).has_modules());
}

TEST_CASE("sim::Server admin requests: admin socket yes, client socket no") {
    Running s;
    wire::Request add;
    add.mutable_add_module();
    Raw client(s.options.socket);
    client.hello();
    CHECK(client.call(add).error().code() == wire::ERROR_PERMISSION);
    Raw admin(s.options.admin_socket);
    admin.hello();
    CHECK(admin.call(add).module().number() == 3);
}

TEST_CASE("sim::Server subscribers get a snapshot, then events") {
    Running s;
    Raw sub(s.options.socket);
    sub.hello();
    wire::Request subscribe;
    subscribe.set_id(3);
    subscribe.mutable_subscribe();
    auto snapshot = sub.call(subscribe);
    REQUIRE(snapshot.has_modules());
    CHECK(snapshot.id() == 3);
    CHECK(snapshot.modules().modules_size() == 2);

    // A subscriber that never reads does not hold anything up.
    Raw lazy(s.options.socket);
    lazy.hello();
    lazy.call(subscribe);

    Raw admin(s.options.admin_socket);
    admin.hello();
    wire::Request clear;
    clear.mutable_control_module()->set_module(2);
    clear.mutable_control_module()->set_action(wire::MODULE_CLEAR);
    CHECK(admin.call(clear).has_module());
    wire::Request add;
    add.mutable_add_module();
    CHECK(admin.call(add).has_module());

    std::vector<wire::Event> events;
    while (events.size() < 4) {
        auto m = sub.receive();
        REQUIRE(m.has_event());
        events.push_back(m.event());
    }
    for (std::size_t i = 1; i < events.size(); ++i) {
        CHECK(events[i].sequence() > events[i - 1].sequence());
    }
    for (const auto& e : events) {
        CHECK_FALSE(e.snapshot());
        if (e.module().number() == 3 && e.module().state() == wire::MODULE_INITIALISING) {
            CHECK(e.previous_state() == wire::MODULE_STATE_UNSPECIFIED);
        }
    }
    CHECK(events[0].module().number() == 2);
    CHECK(events[0].module().state() == wire::MODULE_INITIALISING);
    CHECK(events[0].previous_state() == wire::MODULE_USABLE);
    CHECK(events[0].module().generation() == 1);
}

TEST_CASE("sim::Server through SimClient, SimAdmin and an EventStream") {
    Running s;
    hsm::SimClient client(s.client());
    CHECK(client.world_id() == s.server->world()->id());
    auto card = client.create_token(hsm::TokenType::softcard, "app", SecureBuffer::from("pw"));
    CHECK(client.tokens().size() == 1);
    auto token = client.load_token(1, card.hash, SecureBuffer::from("pw"));
    hsm::KeySpec spec;
    spec.type = hsm::KeyType::rsa;
    spec.bits = 2048;
    spec.label = "app key";
    spec.token_handle = token;
    auto generated = client.generate_key(1, spec);
    hsm::Mechanism pss;
    pss.kind = hsm::MechanismKind::rsa_pss;
    pss.hash = hsm::Hash::sha256;
    pss.mgf_hash = hsm::Hash::sha256;
    pss.salt_len = 32;
    Bytes digest = simtest::digest(hsm::Hash::sha256, to_bytes("over the socket"));
    Bytes sig = client.sign(1, generated.handle, pss, digest);
    CHECK(simtest::openssl_verify_pss(generated.key.public_der, digest, sig, 32));
    CHECK_NOTHROW(client.verify(1, generated.handle, pss, digest, sig));

    auto events = hsm::subscribe(s.client());
    CHECK(events->snapshot().size() == 2);
    hsm::SimAdmin admin(s.admin());
    admin.control(1, hsm::ModuleAction::clear);
    auto event = events->next(3000ms);
    REQUIRE(event);
    CHECK(event->module.number == 1);
    CHECK(event->module.state == hsm::ModuleState::initialising);
    try {
        client.sign(1, generated.handle, pss, digest);
        FAIL("signed on a cleared module");
    } catch (const Error& e) {
        CHECK((e.code() == ErrorCode::module_not_usable || e.code() == ErrorCode::invalid_handle));
    }
    event = events->next(3000ms);
    REQUIRE(event);
    CHECK(event->module.state == hsm::ModuleState::usable);
    try {
        client.sign(1, generated.handle, pss, digest);
        FAIL("an old handle works after a clear");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::invalid_handle);
    }
}

TEST_CASE("sim::Server what a process loaded stays while it has a connection open") {
    Running s;
    auto objects = [&] {
        std::uint32_t n = 0;
        for (const auto& m : s.server->fleet().list()) {
            n += m.objects;
        }
        return n;
    };
    const pid_t me = ::getpid();
    auto loader = std::make_unique<hsm::SimClient>(s.client());
    auto card = loader->create_token(hsm::TokenType::softcard, "card", SecureBuffer::from("pw"));
    loader->load_token(1, card.hash, SecureBuffer::from("pw"));
    loader->load_token(2, card.hash, SecureBuffer::from("pw"));
    auto held = std::make_unique<hsm::SimClient>(s.client());
    REQUIRE(simtest::eventually([&] { return s.server->clients().connections(me) == 2; }));
    CHECK(objects() == 2);

    loader.reset();
    REQUIRE(simtest::eventually([&] { return s.server->clients().connections(me) == 1; }));
    CHECK(objects() == 2);

    held.reset();
    CHECK(simtest::eventually([&] { return objects() == 0; }));
    CHECK(s.server->clients().connections(me) == 0);
}
