#include "preloadrun/common/error.hpp"
#include "sim/model/simulated_module.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <chrono>
#include <doctest/doctest.h>
#include <functional>
#include <thread>

using namespace preloadrun;
using namespace preloadrun::sim;
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

TEST_CASE("sim::Module info and operations") {
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

TEST_CASE("sim::Module refuses operations unless usable, naming the state") {
    for (auto state : {ModuleState::initialising, ModuleState::failed, ModuleState::removed}) {
        Modules modules;
        auto made = modules.make(1, "E", 0);
        auto& m = *made;
        m.transition(state, false, true);
        std::string message;
        CHECK(code_of([&] { m.operate(kMe, OpKind::crypto, [] {}); }, &message) ==
              ErrorCode::module_not_usable);
        CHECK(message.find(std::string(hsm::to_string(state))) != std::string::npos);
        CHECK(message.find("module 1") != std::string::npos);
        CHECK(m.info().ops_failed == 1);
    }
}

TEST_CASE("sim::Module object table") {
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
        auto change = m.transition(ModuleState::initialising, true, true);
        CHECK(change.previous_state == ModuleState::usable);
        CHECK(change.previous_generation == 0);
        CHECK(change.now.generation == 1);
        CHECK(change.now.objects == 0);
        m.transition(ModuleState::usable, false, false);
        CHECK(code_of([&] { m.key(key, me); }) == ErrorCode::invalid_handle);
        auto fresh = m.add_token(me, kNoClient, token_info(), SecureBuffer::from("k"));
        CHECK(fresh > loose);
    }
    SUBCASE("objects are not added to a module that is not usable") {
        m.transition(ModuleState::failed, false, true);
        CHECK(code_of([&] { m.add_token(me, kNoClient, token_info(), SecureBuffer::from("k")); }) ==
              ErrorCode::module_not_usable);
    }
}

TEST_CASE("sim::Module fail_next fails the next N operations transiently") {
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

TEST_CASE("sim::Module latency serialises operations") {
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
        m.transition(ModuleState::failed, false, true);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100));
        slow.join();
    }
}
