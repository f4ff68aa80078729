#include "preloadrun/common/error.hpp"
#include "sim/model/engine.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/fake_clock.hpp"
#include "support/temp_dir.hpp"

#include <condition_variable>
#include <doctest/doctest.h>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

using namespace preloadrun;
using namespace preloadrun::sim;
using hsm::ModuleAction;
using hsm::ModuleState;

namespace {

using testsupport::code_of;
using namespace std::chrono_literals;

constexpr uid_t kMe = 1000;
constexpr uid_t kOther = 1001;
constexpr ClientId kClient = 7; // the process loading, in these tests

using testsupport::FakeClock;

struct Setup {
    testsupport::TempDir tmp;
    FakeClock clock; // for the passphrase limiter
    std::unique_ptr<World> world;
    std::unique_ptr<SimulatedModules> sims;
    std::unique_ptr<Fleet> fleet;
    std::unique_ptr<Engine> engine;
    hsm::TokenInfo card;
    explicit Setup(const ObjectLimits& limits = {}) {
        world = simtest::make_world(tmp.path());
        world->enrol_module();
        world->enrol_module();
        sims = std::make_unique<SimulatedModules>(*world, clock);
        fleet = std::make_unique<Fleet>(*world, FleetOptions{0, 10, limits}, sims->factory());
        engine = std::make_unique<Engine>(*world, *fleet, ::geteuid());
        card = world->create_token(hsm::TokenType::softcard, "card", SecureBuffer::from("pw"));
    }
    hsm::KeySpec spec(hsm::KeyType type, hsm::ObjectHandle token = 0, bool persistent = true) {
        hsm::KeySpec s;
        s.type = type;
        s.label = "label";
        s.id = {1, 2};
        s.persistent = persistent;
        s.token_handle = token;
        return s;
    }
};

hsm::Mechanism ecdsa() {
    hsm::Mechanism m;
    m.kind = hsm::MechanismKind::ecdsa;
    return m;
}

} // namespace

TEST_CASE("sim::Engine load_token checks the passphrase") {
    Setup s;
    auto handle = s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kMe, kClient);
    CHECK(handle != 0);
    CHECK(s.fleet->info(1).objects == 1);
    std::string message;
    CHECK(
        code_of(
            [&] { s.engine->load_token(1, s.card.hash, SecureBuffer::from("nope"), kMe, kClient); },
            &message) == ErrorCode::wrong_passphrase);
    CHECK(message.find("nope") == std::string::npos);
    CHECK(s.fleet->info(1).objects == 1);    // nothing changed
    CHECK(s.fleet->info(1).ops_failed == 0); // checked before the module was taken
    CHECK(code_of([&] {
              s.engine->load_token(1, Bytes(20, 0), SecureBuffer::from("pw"), kMe, kClient);
          }) == ErrorCode::not_found);
}

// Holds a module (an operation of kOther that lasts until release()).
class Holder {
public:
    explicit Holder(SimulatedModule& module)
        : thread_([this, &module] {
              module.operate(kOther, OpKind::crypto, [this] {
                  std::unique_lock lock(mutex_);
                  held_ = true;
                  cv_.notify_all();
                  cv_.wait(lock, [this] { return released_; });
              });
          }) {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return held_; });
    }
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() { release(); }
    void release() {
        {
            std::lock_guard lock(mutex_);
            released_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool held_ = false;
    bool released_ = false;
    std::thread thread_;
};

TEST_CASE("sim::Engine checks a passphrase without taking the module") {
    Setup s;
    SimulatedModule& m = simtest::simulated(*s.fleet, 1);
    Holder holder(m);
    // A wrong passphrase is answered while another uid's operation holds
    // the module: the check does not wait for it.
    auto wrong = std::async(std::launch::async, [&] {
        return code_of([&] {
            s.engine->load_token(1, s.card.hash, SecureBuffer::from("nope"), kMe, kClient);
        });
    });
    REQUIRE(wrong.wait_for(30s) == std::future_status::ready);
    CHECK(wrong.get() == ErrorCode::wrong_passphrase);
    CHECK(m.waiting() == 0);
    // The right one waits for the module only to add the token.
    auto right = std::async(std::launch::async, [&] {
        return s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kMe, kClient);
    });
    REQUIRE(simtest::eventually([&] { return m.waiting() == 1; }));
    holder.release();
    CHECK(right.get() != 0);
    CHECK(m.held_by(kMe) == 1);
}

TEST_CASE("sim::Engine refuses a uid's tries after 5 wrong passphrases, not another uid's") {
    Setup s;
    for (int i = 0; i < 5; ++i) {
        REQUIRE(code_of([&] {
                    s.engine->load_token(1, s.card.hash,
                                         SecureBuffer::from("guess" + std::to_string(i)), kOther,
                                         kClient);
                }) == ErrorCode::wrong_passphrase);
    }
    std::string message;
    CHECK(code_of(
              [&] {
                  s.engine->load_token(2, s.card.hash, SecureBuffer::from("pw"), kOther, kClient);
              },
              &message) == ErrorCode::too_many_attempts);
    CHECK(message.find("softcard 'card' from this user; try again in 1 s") != std::string::npos);
    CHECK(s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kMe, kClient) != 0);
    s.clock.advance(1s);
    CHECK(s.engine->load_token(2, s.card.hash, SecureBuffer::from("pw"), kOther, kClient) != 0);
}

TEST_CASE("sim::Engine a uid holds at most its share of a module's objects") {
    Setup s(ObjectLimits{kMaxObjectsPerModule, 2});
    auto gen = s.engine->generate_key(1, s.spec(hsm::KeyType::ec_p256), kOther, kClient);
    s.engine->load_key(1, gen.key.ident, 0, kOther, kClient);
    std::string message;
    CHECK(code_of([&] { s.engine->load_key(1, gen.key.ident, 0, kOther, kClient); }, &message) ==
          ErrorCode::limit);
    CHECK(message.find("--max-objects-per-uid 2") != std::string::npos);
    CHECK(code_of([&] {
              s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kOther, kClient);
          }) == ErrorCode::limit);
    // Another uid loads the same key there; the same uid on another module.
    CHECK(s.engine->load_key(1, gen.key.ident, 0, kMe, kClient) != 0);
    CHECK(s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kMe, kClient) != 0);
    CHECK(s.engine->load_key(2, gen.key.ident, 0, kOther, kClient) != 0);
    CHECK(s.fleet->module(1).held_by(kOther) == 2);
}

TEST_CASE("sim::Engine module-protected persistent keys load on any module") {
    Setup s;
    auto gen = s.engine->generate_key(1, s.spec(hsm::KeyType::ec_p256), kMe, kClient);
    CHECK(gen.key.persistent);
    CHECK_FALSE(gen.key.token);
    REQUIRE(s.world->keys().size() == 1);
    CHECK(s.world->keys()[0].ident == gen.key.ident);

    auto on2 = s.engine->load_key(2, gen.key.ident, 0, kMe, kClient);
    Bytes digest = simtest::digest(hsm::Hash::sha256, to_bytes("data"));
    Bytes sig = s.engine->sign(2, on2, ecdsa(), digest, kMe);
    CHECK(simtest::openssl_verify_ecdsa_raw(gen.key.public_der, digest, sig));
    CHECK_NOTHROW(s.engine->verify(1, gen.handle, ecdsa(), digest, sig, kMe));
    CHECK(s.fleet->info(2).ops == 1);

    SUBCASE("another uid cannot use it") {
        CHECK(code_of([&] { s.engine->sign(2, on2, ecdsa(), digest, kOther); }) ==
              ErrorCode::permission);
        CHECK(code_of([&] { s.engine->unload(2, on2, kOther); }) == ErrorCode::permission);
    }
    SUBCASE("a clear invalidates the handle; reloading gives a new one") {
        s.fleet->control(2, ModuleAction::clear);
        REQUIRE(simtest::eventually([&] { return s.fleet->info(2).state == ModuleState::usable; }));
        CHECK(code_of([&] { s.engine->sign(2, on2, ecdsa(), digest, kMe); }) ==
              ErrorCode::invalid_handle);
        auto again = s.engine->load_key(2, gen.key.ident, 0, kMe, kClient);
        CHECK(again != on2);
        CHECK_NOTHROW(s.engine->sign(2, again, ecdsa(), digest, kMe));
    }
    SUBCASE("a module key is loaded with token handle 0") {
        auto token = s.engine->load_token(2, s.card.hash, SecureBuffer::from("pw"), kMe, kClient);
        CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, token, kMe, kClient); }) ==
              ErrorCode::usage);
    }
    SUBCASE("unload, then destroy") {
        s.engine->unload(2, on2, kMe);
        CHECK(code_of([&] { s.engine->sign(2, on2, ecdsa(), digest, kMe); }) ==
              ErrorCode::invalid_handle);
        s.world->destroy_key(gen.key.ident);
        CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, 0, kMe, kClient); }) ==
              ErrorCode::not_found);
    }
}

TEST_CASE("sim::Engine token-protected keys need their token on the same module") {
    Setup s;
    auto token1 = s.engine->load_token(1, s.card.hash, SecureBuffer::from("pw"), kMe, kClient);
    auto gen = s.engine->generate_key(1, s.spec(hsm::KeyType::rsa, token1), kMe, kClient);
    REQUIRE(gen.key.token);
    CHECK(gen.key.token->name == "card");
    CHECK(gen.key.bits == 2048);
    REQUIRE(s.world->keys().size() == 1);
    CHECK(s.world->keys()[0].token->hash == s.card.hash);

    std::string message;
    CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, 0, kMe, kClient); }, &message) ==
          ErrorCode::permission);
    CHECK(message.find("softcard 'card'") != std::string::npos);
    // Token 1's handle means nothing on module 2.
    CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, token1 + 100, kMe, kClient); }) ==
          ErrorCode::invalid_handle);

    auto token2 = s.engine->load_token(2, s.card.hash, SecureBuffer::from("pw"), kMe, kClient);
    auto key2 = s.engine->load_key(2, gen.key.ident, token2, kMe, kClient);
    hsm::Mechanism pkcs1;
    pkcs1.kind = hsm::MechanismKind::rsa_pkcs1;
    pkcs1.hash = hsm::Hash::sha256;
    Bytes digest = simtest::digest(hsm::Hash::sha256, to_bytes("rsa"));
    CHECK(simtest::openssl_verify_pkcs1(gen.key.public_der, digest,
                                        s.engine->sign(2, key2, pkcs1, digest, kMe)));

    SUBCASE("another token's handle is refused, naming both") {
        auto other =
            s.world->create_token(hsm::TokenType::softcard, "other", SecureBuffer::from("pw2"));
        auto other2 = s.engine->load_token(2, other.hash, SecureBuffer::from("pw2"), kMe, kClient);
        CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, other2, kMe, kClient); },
                      &message) == ErrorCode::permission);
        CHECK(message.find("'other'") != std::string::npos);
        CHECK(message.find("'card'") != std::string::npos);
    }
    SUBCASE("another uid's token handle is refused") {
        CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, token2, kOther, kClient); }) ==
              ErrorCode::permission);
    }
    SUBCASE("unloading the token unloads the key") {
        s.engine->unload(2, token2, kMe);
        CHECK(code_of([&] { s.engine->sign(2, key2, pkcs1, digest, kMe); }) ==
              ErrorCode::invalid_handle);
    }
}

TEST_CASE("sim::Engine session keys live only in their module") {
    Setup s;
    auto gen = s.engine->generate_key(1, s.spec(hsm::KeyType::aes, 0, false), kMe, kClient);
    CHECK_FALSE(gen.key.persistent);
    CHECK(gen.key.ident.size() == 40);
    CHECK(s.world->keys().empty());
    CHECK(code_of([&] { s.engine->load_key(2, gen.key.ident, 0, kMe, kClient); }) ==
          ErrorCode::not_found);
    hsm::Mechanism gcm;
    gcm.kind = hsm::MechanismKind::aes_gcm;
    gcm.iv = Bytes(12, 3);
    Bytes ct = s.engine->encrypt(1, gen.handle, gcm, to_bytes("plain"), kMe);
    CHECK(s.engine->decrypt(1, gen.handle, gcm, ct, kMe) == to_bytes("plain"));
    s.fleet->control(1, ModuleAction::clear);
    REQUIRE(simtest::eventually([&] { return s.fleet->info(1).state == ModuleState::usable; }));
    CHECK(code_of([&] { s.engine->decrypt(1, gen.handle, gcm, ct, kMe); }) ==
          ErrorCode::invalid_handle);
}

TEST_CASE("sim::Engine random and injected failures") {
    Setup s;
    CHECK(s.engine->random(1, 100, kMe).size() == 100);
    s.fleet->fail_next(1, 1);
    CHECK(code_of([&] { s.engine->random(1, 10, kMe); }) == ErrorCode::transient);
    CHECK(s.engine->random(1, 10, kMe).size() == 10);
    auto info = s.fleet->info(1);
    CHECK(info.ops == 2);
    CHECK(info.ops_failed == 1);
    s.fleet->control(1, ModuleAction::fail);
    CHECK(code_of([&] { s.engine->random(1, 10, kMe); }) == ErrorCode::module_not_usable);
}
