#include "model/simulated_module.hpp"
#include "preloadrun/common/error.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/fake_clock.hpp"
#include "support/temp_dir.hpp"

#include <chrono>
#include <condition_variable>
#include <doctest/doctest.h>
#include <fstream>
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

constexpr uid_t kMe = 1000;

hsm::TokenInfo token_info() {
    return {hsm::TokenType::softcard, "t", Bytes(20, 1)};
}

// Simulated modules over a world of their own.
struct Modules {
    testsupport::TempDir tmp;
    std::unique_ptr<World> world = simtest::make_world(tmp.path());
    SimulatedModules sims{*world};
    std::unique_ptr<SimulatedModule> make(std::uint32_t number, std::string esn,
                                          std::uint32_t latency_ms) {
        ModuleStart start;
        start.number = number;
        start.esn = std::move(esn);
        start.latency_ms = latency_ms;
        return sims.make(std::move(start));
    }
};

KeyObject key_object(hsm::ObjectHandle token = 0) {
    KeyObject k;
    k.info.label = "k";
    k.key = std::make_shared<const Key>(Key::generate(hsm::KeyType::aes, 128));
    k.token_handle = token;
    return k;
}

} // namespace

TEST_CASE("sim::SimulatedModule info and operations") {
    Modules modules;
    auto made = modules.make(3, "AAAA-BBBB-CCCC", 0);
    auto& m = *made;
    auto info = m.info();
    CHECK(info.number == 3);
    CHECK(info.esn == "AAAA-BBBB-CCCC");
    CHECK(info.state == ModuleState::usable);
    CHECK(info.generation == 0);

    CHECK(m.operate(kMe, OpKind::crypto, [] { return 42; }) == 42);
    m.operate(kMe, OpKind::management, [] {});
    CHECK(m.info().ops == 1);
    CHECK(code_of([&] {
              m.operate(kMe, OpKind::crypto, []() -> int { throw Error(ErrorCode::crypto, "x"); });
          }) == ErrorCode::crypto);
    CHECK(m.info().ops == 1);
    CHECK(m.info().ops_failed == 1);
}

TEST_CASE("sim::SimulatedModule refuses operations unless usable, naming the state") {
    for (auto state : {ModuleState::initialising, ModuleState::failed, ModuleState::removed}) {
        Modules modules;
        auto made = modules.make(1, "E", 0);
        auto& m = *made;
        m.transition(state, false, true, false);
        std::string message;
        CHECK(code_of([&] { m.operate(kMe, OpKind::crypto, [] {}); }, &message) ==
              ErrorCode::module_not_usable);
        CHECK(message.find(std::string(hsm::to_string(state))) != std::string::npos);
        CHECK(message.find("module 1") != std::string::npos);
        CHECK(m.info().ops_failed == 1);
    }
}

TEST_CASE("sim::SimulatedModule object table") {
    Modules modules;
    auto made = modules.make(1, "E", 0);
    auto& m = *made;
    const uid_t me = 1000;
    const uid_t other = 1001;
    auto token = m.add_token(me, kNoClient, token_info(), SecureBuffer::from("k"));
    CHECK(token != 0);
    auto key = m.add_key(me, kNoClient, key_object(token));
    auto loose = m.add_key(me, kNoClient, key_object());
    CHECK(m.info().objects == 3);
    CHECK(m.token(token, me)->info.name == "t");
    CHECK(m.key(key, me)->token_handle == token);

    SUBCASE("another uid's objects are refused") {
        CHECK(code_of([&] { m.key(key, other); }) == ErrorCode::permission);
        CHECK(code_of([&] { m.token(token, other); }) == ErrorCode::permission);
        CHECK(code_of([&] { m.remove(key, other); }) == ErrorCode::permission);
        CHECK(code_of([&] { m.add_key(other, kNoClient, key_object(token)); }) ==
              ErrorCode::permission);
    }
    SUBCASE("a handle of the other kind is invalid") {
        CHECK(code_of([&] { m.key(token, me); }) == ErrorCode::invalid_handle);
        CHECK(code_of([&] { m.token(key, me); }) == ErrorCode::invalid_handle);
        CHECK(code_of([&] { m.key(0, me); }) == ErrorCode::invalid_handle);
    }
    SUBCASE("unloading a token unloads its keys") {
        CHECK(m.remove(token, me) == 2);
        CHECK(code_of([&] { m.key(key, me); }) == ErrorCode::invalid_handle);
        CHECK(m.key(loose, me));
        CHECK(m.info().objects == 1);
        CHECK(code_of([&] { m.add_key(me, kNoClient, key_object(token)); }) ==
              ErrorCode::invalid_handle);
    }
    SUBCASE("a clear drops everything; old handles never come back") {
        auto change = m.transition(ModuleState::initialising, true, true, false);
        CHECK(change.previous_state == ModuleState::usable);
        CHECK(change.previous_generation == 0);
        CHECK(change.now.generation == 1);
        CHECK(change.now.objects == 0);
        m.transition(ModuleState::usable, false, false, false);
        CHECK(code_of([&] { m.key(key, me); }) == ErrorCode::invalid_handle);
        auto fresh = m.add_token(me, kNoClient, token_info(), SecureBuffer::from("k"));
        CHECK(fresh > loose);
    }
    SUBCASE("objects are not added to a module that is not usable") {
        m.transition(ModuleState::failed, false, true, false);
        CHECK(code_of([&] { m.add_token(me, kNoClient, token_info(), SecureBuffer::from("k")); }) ==
              ErrorCode::module_not_usable);
    }
}

TEST_CASE("sim::SimulatedModule fail_next fails the next N operations transiently") {
    Modules modules;
    auto made = modules.make(2, "E", 0);
    auto& m = *made;
    m.set_fail_next(2);
    CHECK(m.info().fail_next == 2);
    std::string message;
    CHECK(code_of([&] { m.operate(kMe, OpKind::crypto, [] {}); }, &message) ==
          ErrorCode::transient);
    CHECK(message.find("1 more pending") != std::string::npos);
    CHECK(code_of([&] { m.operate(kMe, OpKind::management, [] {}); }) == ErrorCode::transient);
    CHECK_NOTHROW(m.operate(kMe, OpKind::crypto, [] {}));
    auto info = m.info();
    CHECK(info.fail_next == 0);
    CHECK(info.ops_failed == 2);
    CHECK(info.ops == 1);
}

TEST_CASE("sim::SimulatedModule latency serialises operations") {
    Modules modules;
    auto made = modules.make(1, "E", 40);
    auto& m = *made;
    CHECK(m.info().latency_ms == 40);
    auto start = std::chrono::steady_clock::now();
    std::thread a([&] { m.operate(kMe, OpKind::crypto, [] {}); });
    std::thread b([&] { m.operate(kMe, OpKind::crypto, [] {}); });
    m.operate(kMe, OpKind::crypto, [] {});
    a.join();
    b.join();
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= std::chrono::milliseconds(120));
    CHECK(m.info().ops == 3);

    SUBCASE("a state change does not wait behind a slow operation") {
        m.set_latency(500);
        std::thread slow([&] {
            CHECK(code_of([&] { m.operate(kMe, OpKind::crypto, [] {}); }) ==
                  ErrorCode::module_not_usable);
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        auto t0 = std::chrono::steady_clock::now();
        m.transition(ModuleState::failed, false, true, false);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100));
        slow.join();
    }
    SUBCASE("drained: the operation under way finishes, and none starts after it") {
        m.set_latency(300);
        std::thread under_way([&] { m.operate(kMe, OpKind::crypto, [] {}); });
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        auto change = m.transition(ModuleState::failed, false, false, true);
        CHECK(change.now.drained);
        CHECK(change.now.state == ModuleState::failed);
        under_way.join(); // it answered: no exception
        CHECK(m.info().ops == 4);
        CHECK(code_of([&] { m.operate(kMe, OpKind::crypto, [] {}); }) ==
              ErrorCode::module_not_usable);
        CHECK_FALSE(m.transition(ModuleState::initialising, true, true, false).now.drained);
    }
}

// ---- the operations, on a fleet of two simulated modules ----

namespace {

using namespace std::chrono_literals;

constexpr uid_t kOther = 1001;
constexpr ClientId kClient = 7; // the process loading, in these tests

using testsupport::FakeClock;

struct Setup {
    testsupport::TempDir tmp;
    FakeClock clock; // for the passphrase limiter
    std::unique_ptr<World> world;
    std::unique_ptr<SimulatedModules> sims;
    std::unique_ptr<Fleet> fleet;
    hsm::TokenInfo card;
    explicit Setup(const ObjectLimits& limits = {}) {
        world = simtest::make_world(tmp.path());
        world->enrol_module();
        world->enrol_module();
        sims = std::make_unique<SimulatedModules>(*world, clock);
        fleet = std::make_unique<Fleet>(*world, FleetOptions{0, 10, limits}, sims->factory());
        card = world->create_token(hsm::TokenType::softcard, "card", SecureBuffer::from("pw"));
    }
    // Module `number`, through the interface the service uses.
    Module& on(std::uint32_t number) { return fleet->module(number); }
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

TEST_CASE("sim::SimulatedModule load_token checks the passphrase") {
    Setup s;
    auto handle = s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw"));
    CHECK(handle != 0);
    CHECK(s.fleet->info(1).objects == 1);
    std::string message;
    CHECK(code_of(
              [&] {
                  s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("nope"));
              },
              &message) == ErrorCode::wrong_passphrase);
    CHECK(message.find("nope") == std::string::npos);
    CHECK(s.fleet->info(1).objects == 1);    // nothing changed
    CHECK(s.fleet->info(1).ops_failed == 0); // checked before the module was taken
    CHECK(code_of([&] {
              s.on(1).load_token({kMe, kClient}, Bytes(20, 0), SecureBuffer::from("pw"));
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

TEST_CASE("sim::SimulatedModule checks a passphrase without taking the module") {
    Setup s;
    SimulatedModule& m = simtest::simulated(*s.fleet, 1);
    Holder holder(m);
    // A wrong passphrase is answered while another uid's operation holds
    // the module: the check does not wait for it.
    auto wrong = std::async(std::launch::async, [&] {
        return code_of([&] {
            s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("nope"));
        });
    });
    REQUIRE(wrong.wait_for(30s) == std::future_status::ready);
    CHECK(wrong.get() == ErrorCode::wrong_passphrase);
    CHECK(m.waiting() == 0);
    // The right one waits for the module only to add the token.
    auto right = std::async(std::launch::async, [&] {
        return s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw"));
    });
    REQUIRE(simtest::eventually([&] { return m.waiting() == 1; }));
    holder.release();
    CHECK(right.get() != 0);
    CHECK(m.held_by(kMe) == 1);
}

TEST_CASE(
    "sim::SimulatedModule refuses a uid's tries after 5 wrong passphrases, not another uid's") {
    Setup s;
    for (int i = 0; i < 5; ++i) {
        REQUIRE(code_of([&] {
                    s.on(1).load_token({kOther, kClient}, s.card.hash,
                                       SecureBuffer::from("guess" + std::to_string(i)));
                }) == ErrorCode::wrong_passphrase);
    }
    std::string message;
    CHECK(code_of(
              [&] {
                  s.on(2).load_token({kOther, kClient}, s.card.hash, SecureBuffer::from("pw"));
              },
              &message) == ErrorCode::too_many_attempts);
    CHECK(message.find("softcard 'card' from this user; try again in 1 s") != std::string::npos);
    CHECK(s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw")) != 0);
    s.clock.advance(1s);
    CHECK(s.on(2).load_token({kOther, kClient}, s.card.hash, SecureBuffer::from("pw")) != 0);
}

TEST_CASE("sim::SimulatedModule a uid holds at most its share of a module's objects") {
    Setup s(ObjectLimits{kMaxObjectsPerModule, 2});
    auto gen = s.on(1).generate_key({kOther, kClient}, s.spec(hsm::KeyType::ec_p256));
    s.on(1).load_key({kOther, kClient}, gen.key.ident, 0);
    std::string message;
    CHECK(code_of(
              [&] {
                  s.on(1).load_key({kOther, kClient}, gen.key.ident, 0);
              },
              &message) == ErrorCode::limit);
    CHECK(message.find("--max-objects-per-uid 2") != std::string::npos);
    CHECK(code_of([&] {
              s.on(1).load_token({kOther, kClient}, s.card.hash, SecureBuffer::from("pw"));
          }) == ErrorCode::limit);
    // Another uid loads the same key there; the same uid on another module.
    CHECK(s.on(1).load_key({kMe, kClient}, gen.key.ident, 0) != 0);
    CHECK(s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw")) != 0);
    CHECK(s.on(2).load_key({kOther, kClient}, gen.key.ident, 0) != 0);
    CHECK(s.fleet->module(1).held_by(kOther) == 2);
}

TEST_CASE("sim::SimulatedModule module-protected persistent keys load on any module") {
    Setup s;
    auto gen = s.on(1).generate_key({kMe, kClient}, s.spec(hsm::KeyType::ec_p256));
    CHECK(gen.key.persistent);
    CHECK_FALSE(gen.key.token);
    REQUIRE(s.world->keys().size() == 1);
    CHECK(s.world->keys()[0].ident == gen.key.ident);

    auto on2 = s.on(2).load_key({kMe, kClient}, gen.key.ident, 0);
    Bytes digest = simtest::digest(hsm::Hash::sha256, to_bytes("data"));
    Bytes sig = s.on(2).sign({kMe}, on2, ecdsa(), digest);
    CHECK(simtest::openssl_verify_ecdsa_raw(gen.key.public_der, digest, sig));
    CHECK_NOTHROW(s.on(1).verify({kMe}, gen.handle, ecdsa(), digest, sig));
    CHECK(s.fleet->info(2).ops == 1);

    SUBCASE("another uid cannot use it") {
        CHECK(code_of([&] { s.on(2).sign({kOther}, on2, ecdsa(), digest); }) ==
              ErrorCode::permission);
        CHECK(code_of([&] { s.on(2).unload({kOther}, on2); }) == ErrorCode::permission);
    }
    SUBCASE("a clear invalidates the handle; reloading gives a new one") {
        s.fleet->control(2, ModuleAction::clear);
        REQUIRE(simtest::eventually([&] { return s.fleet->info(2).state == ModuleState::usable; }));
        CHECK(code_of([&] { s.on(2).sign({kMe}, on2, ecdsa(), digest); }) ==
              ErrorCode::invalid_handle);
        auto again = s.on(2).load_key({kMe, kClient}, gen.key.ident, 0);
        CHECK(again != on2);
        CHECK_NOTHROW(s.on(2).sign({kMe}, again, ecdsa(), digest));
    }
    SUBCASE("a module key is loaded with token handle 0") {
        auto token = s.on(2).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw"));
        CHECK(code_of([&] {
                  s.on(2).load_key({kMe, kClient}, gen.key.ident, token);
              }) == ErrorCode::usage);
    }
    SUBCASE("unload, then destroy") {
        s.on(2).unload({kMe}, on2);
        CHECK(code_of([&] { s.on(2).sign({kMe}, on2, ecdsa(), digest); }) ==
              ErrorCode::invalid_handle);
        s.world->destroy_key(gen.key.ident);
        CHECK(code_of([&] {
                  s.on(2).load_key({kMe, kClient}, gen.key.ident, 0);
              }) == ErrorCode::not_found);
    }
}

TEST_CASE("sim::SimulatedModule token-protected keys need their token on the same module") {
    Setup s;
    auto token1 = s.on(1).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw"));
    auto gen = s.on(1).generate_key({kMe, kClient}, s.spec(hsm::KeyType::rsa, token1));
    REQUIRE(gen.key.token);
    CHECK(gen.key.token->name == "card");
    CHECK(gen.key.bits == 2048);
    REQUIRE(s.world->keys().size() == 1);
    CHECK(s.world->keys()[0].token->hash == s.card.hash);

    std::string message;
    CHECK(code_of(
              [&] {
                  s.on(2).load_key({kMe, kClient}, gen.key.ident, 0);
              },
              &message) == ErrorCode::permission);
    CHECK(message.find("softcard 'card'") != std::string::npos);
    // Token 1's handle means nothing on module 2.
    CHECK(code_of([&] {
              s.on(2).load_key({kMe, kClient}, gen.key.ident, token1 + 100);
          }) == ErrorCode::invalid_handle);

    auto token2 = s.on(2).load_token({kMe, kClient}, s.card.hash, SecureBuffer::from("pw"));
    auto key2 = s.on(2).load_key({kMe, kClient}, gen.key.ident, token2);
    hsm::Mechanism pkcs1;
    pkcs1.kind = hsm::MechanismKind::rsa_pkcs1;
    pkcs1.hash = hsm::Hash::sha256;
    Bytes digest = simtest::digest(hsm::Hash::sha256, to_bytes("rsa"));
    CHECK(simtest::openssl_verify_pkcs1(gen.key.public_der, digest,
                                        s.on(2).sign({kMe}, key2, pkcs1, digest)));

    SUBCASE("another token's handle is refused, naming both") {
        auto other =
            s.world->create_token(hsm::TokenType::softcard, "other", SecureBuffer::from("pw2"));
        auto other2 = s.on(2).load_token({kMe, kClient}, other.hash, SecureBuffer::from("pw2"));
        CHECK(code_of(
                  [&] {
                      s.on(2).load_key({kMe, kClient}, gen.key.ident, other2);
                  },
                  &message) == ErrorCode::permission);
        CHECK(message.find("'other'") != std::string::npos);
        CHECK(message.find("'card'") != std::string::npos);
    }
    SUBCASE("another uid's token handle is refused") {
        CHECK(code_of([&] {
                  s.on(2).load_key({kOther, kClient}, gen.key.ident, token2);
              }) == ErrorCode::permission);
    }
    SUBCASE("unloading the token unloads the key") {
        s.on(2).unload({kMe}, token2);
        CHECK(code_of([&] { s.on(2).sign({kMe}, key2, pkcs1, digest); }) ==
              ErrorCode::invalid_handle);
    }
}

TEST_CASE("sim::SimulatedModule session keys live only in their module") {
    Setup s;
    auto gen = s.on(1).generate_key({kMe, kClient}, s.spec(hsm::KeyType::aes, 0, false));
    CHECK_FALSE(gen.key.persistent);
    CHECK(gen.key.ident.size() == 40);
    CHECK(s.world->keys().empty());
    CHECK(code_of([&] {
              s.on(2).load_key({kMe, kClient}, gen.key.ident, 0);
          }) == ErrorCode::not_found);
    hsm::Mechanism gcm;
    gcm.kind = hsm::MechanismKind::aes_gcm;
    gcm.iv = Bytes(12, 3);
    Bytes ct = s.on(1).encrypt({kMe}, gen.handle, gcm, to_bytes("plain"));
    CHECK(s.on(1).decrypt({kMe}, gen.handle, gcm, ct) == to_bytes("plain"));
    s.fleet->control(1, ModuleAction::clear);
    REQUIRE(simtest::eventually([&] { return s.fleet->info(1).state == ModuleState::usable; }));
    CHECK(code_of([&] { s.on(1).decrypt({kMe}, gen.handle, gcm, ct); }) ==
          ErrorCode::invalid_handle);
}

TEST_CASE("sim::SimulatedModule random and injected failures") {
    Setup s;
    CHECK(s.on(1).random({kMe}, 100).size() == 100);
    s.fleet->fail_next(1, 1);
    CHECK(code_of([&] { s.on(1).random({kMe}, 10); }) == ErrorCode::transient);
    CHECK(s.on(1).random({kMe}, 10).size() == 10);
    auto info = s.fleet->info(1);
    CHECK(info.ops == 2);
    CHECK(info.ops_failed == 1);
    s.fleet->control(1, ModuleAction::fail);
    CHECK(code_of([&] { s.on(1).random({kMe}, 10); }) == ErrorCode::module_not_usable);
}

TEST_CASE("sim::SimulatedModule wraps extractable keys and unwraps keys as imported") {
    Setup s;
    const Caller me{kMe, kClient};
    auto kek_spec = s.spec(hsm::KeyType::aes, 0, false);
    kek_spec.bits = 256;
    const auto kek = s.on(1).generate_key(me, kek_spec);
    auto target_spec = s.spec(hsm::KeyType::aes, 0, false);
    target_spec.bits = 128;
    target_spec.extractable = true;
    const auto target = s.on(1).generate_key(me, target_spec);
    CHECK(target.key.extractable);
    CHECK_FALSE(target.key.imported);
    REQUIRE(target.key.check_value.size() == 3);
    hsm::Mechanism wrap;
    wrap.kind = hsm::MechanismKind::aes_key_wrap;
    const Bytes wrapped = s.on(1).wrap_key(me, kek.handle, wrap, target.handle);
    CHECK(wrapped.size() == 24);

    SUBCASE("unwrapped, it is the same key, imported, as extractable as asked") {
        auto spec = s.spec(hsm::KeyType::aes, 0, false);
        spec.unwrap_with = kek.handle;
        spec.unwrap_mechanism = wrap;
        spec.value = SecureBuffer(wrapped.data(), wrapped.size());
        const auto back = s.on(1).generate_key(me, spec);
        CHECK(back.key.bits == 128); // the key's own size
        CHECK(back.key.check_value == target.key.check_value);
        CHECK(back.key.imported);
        CHECK_FALSE(back.key.extractable);
        CHECK(code_of([&] { s.on(1).wrap_key(me, kek.handle, wrap, back.handle); }) ==
              ErrorCode::permission);
    }
    SUBCASE("what does not unwrap, or is not the key asked for, is refused") {
        auto spec = s.spec(hsm::KeyType::aes, 0, false);
        spec.unwrap_with = kek.handle;
        spec.unwrap_mechanism = wrap;
        Bytes bad = wrapped;
        bad[4] ^= 1;
        spec.value = SecureBuffer(bad.data(), bad.size());
        CHECK(code_of([&] { s.on(1).generate_key(me, spec); }) == ErrorCode::crypto);
        spec.type = hsm::KeyType::rsa;
        spec.value = SecureBuffer(wrapped.data(), wrapped.size());
        CHECK(code_of([&] { s.on(1).generate_key(me, spec); }) == ErrorCode::usage);
    }
    SUBCASE("a key made without extractable never leaves; RSA wraps no private key") {
        CHECK(code_of([&] { s.on(1).wrap_key(me, target.handle, wrap, kek.handle); }) ==
              ErrorCode::permission);
        auto rsa_spec = s.spec(hsm::KeyType::rsa, 0, false);
        rsa_spec.bits = 2048;
        rsa_spec.extractable = true;
        const auto rsa = s.on(1).generate_key(me, rsa_spec);
        hsm::Mechanism oaep;
        oaep.kind = hsm::MechanismKind::rsa_oaep;
        oaep.hash = oaep.mgf_hash = hsm::Hash::sha256;
        CHECK(code_of([&] { s.on(1).wrap_key(me, rsa.handle, oaep, rsa.handle); }) ==
              ErrorCode::usage);
        CHECK(s.on(1).wrap_key(me, rsa.handle, oaep, target.handle).size() == 256);
    }
    SUBCASE("another uid may not wrap it") {
        CHECK(code_of([&] {
                  s.on(1).wrap_key({kOther, 8}, kek.handle, wrap, target.handle);
              }) == ErrorCode::permission);
    }
    SUBCASE("a module-protected key, which anyone may load, cannot be extractable") {
        auto p = s.spec(hsm::KeyType::aes, 0, true);
        p.bits = 128;
        p.extractable = true;
        CHECK(code_of([&] { s.on(1).generate_key(me, p); }) == ErrorCode::permission);
        auto copy = s.spec(hsm::KeyType::aes, 0, true);
        copy.copy_of = target.handle; // a session key, extractable
        CHECK(code_of([&] { s.on(1).generate_key(me, copy); }) == ErrorCode::permission);
        CHECK(s.world->keys().empty());
    }
    SUBCASE("a persistent key keeps the flag, bound to its material in the world") {
        const auto pw = SecureBuffer::from("pw");
        auto p = s.spec(hsm::KeyType::aes, s.on(1).load_token(me, s.card.hash, pw), true);
        p.bits = 128;
        p.extractable = true;
        const auto stored = s.on(1).generate_key(me, p);
        CHECK(s.world->key_record(stored.key.ident).extractable);
        const auto token2 = s.on(2).load_token(me, s.card.hash, pw);
        const auto loaded = s.on(2).load_key(me, stored.key.ident, token2);
        const auto file = s.tmp / ("key_" + stored.key.ident);
        std::string text;
        {
            std::ifstream in(file);
            text.assign(std::istreambuf_iterator<char>(in), {});
        }
        const auto at = text.find("\"extractable\": true");
        REQUIRE(at != std::string::npos);
        text.replace(at, 19, "\"extractable\": false");
        std::ofstream(file, std::ios::trunc) << text;
        // Altered to be sealed, or a sealed key altered to leave: it no longer unwraps.
        CHECK(code_of([&] { s.on(2).load_key(me, stored.key.ident, token2); }) ==
              ErrorCode::corrupt);
        CHECK(loaded != 0);
    }
}
