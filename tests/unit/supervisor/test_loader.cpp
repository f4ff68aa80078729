#include "loader.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_arena.hpp"
#include "support/fake_hsm.hpp"

#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::supervisor;
using testsupport::FakeHsm;

namespace {

const std::vector<hsm::TokenInfo> kTokens{{hsm::TokenType::softcard, "a", Bytes(20, 1)},
                                          {hsm::TokenType::softcard, "b", Bytes(20, 2)},
                                          {hsm::TokenType::cardset, "c", Bytes(20, 3)}};

std::vector<SecureBuffer> passphrases(std::size_t n) {
    std::vector<SecureBuffer> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(SecureBuffer::from("passphrase " + std::to_string(i)));
    }
    return out;
}

} // namespace

TEST_CASE("supervisor::Loader::load_module loads every token, or none") {
    FakeHsm hsm;
    Loader loader([&hsm] { return hsm.connect(); }, kTokens, passphrases(kTokens.size()));

    SUBCASE("every token, with the instance of the service that issued the handles") {
        const auto result = loader.load_module(2);
        REQUIRE_FALSE(result.error);
        CHECK(result.module == 2);
        CHECK(result.instance == hsm.instance);
        REQUIRE(result.handles.size() == 3);
        for (const auto& [token, handle] : result.handles) {
            CHECK(hsm.token_loaded(2, handle));
        }
        CHECK_FALSE(result.failed_token);
    }
    SUBCASE("a token that fails: what was loaded there is unloaded, and the token named") {
        hsm.on_load_token = [](std::uint32_t, const Bytes& hash) {
            if (hash == Bytes(20, 3)) {
                throw Error(ErrorCode::wrong_passphrase, "wrong passphrase");
            }
        };
        const auto result = loader.load_module(1);
        REQUIRE(result.error);
        CHECK(result.error->code() == ErrorCode::wrong_passphrase);
        CHECK(result.failed_token == 2u);
        CHECK(result.handles.empty());
        CHECK(hsm.unloaded.size() == 2);
        for (const auto& [module, handle] : hsm.unloaded) {
            CHECK_FALSE(hsm.token_loaded(module, handle));
        }
    }
    SUBCASE("a module that is not usable") {
        hsm.fail_module(3);
        const auto result = loader.load_module(3);
        REQUIRE(result.error);
        CHECK(result.error->code() == ErrorCode::module_not_usable);
    }
    SUBCASE("no service") {
        hsm.reachable = false;
        const auto result = loader.load_module(1);
        REQUIRE(result.error);
        CHECK(result.error->code() == ErrorCode::unavailable);
    }
}

TEST_CASE("supervisor::Loader::load_modules loads onto every module at once") {
    FakeHsm hsm(4);
    hsm.fail_module(3);
    Loader loader([&hsm] { return hsm.connect(); }, kTokens, passphrases(kTokens.size()));
    const auto results = loader.load_modules({1, 2, 3, 4});
    REQUIRE(results.size() == 4);
    for (const auto& result : results) {
        CAPTURE(result.module);
        CHECK(result.error.has_value() == (result.module == 3));
        CHECK(result.handles.size() == (result.module == 3 ? 0u : 3u));
    }
    CHECK(hsm.made == 4); // a connection each

    SUBCASE("unload: every handle, a cleared module has nothing left") {
        std::map<std::uint32_t, std::map<std::size_t, hsm::ObjectHandle>> loaded;
        for (const auto& result : results) {
            loaded[result.module] = result.handles;
        }
        hsm.clear(4);
        loader.unload(loaded);
        for (std::uint32_t m : {1u, 2u}) {
            for (const auto& [token, handle] : loaded[m]) {
                CHECK_FALSE(hsm.token_loaded(m, handle));
            }
        }
        CHECK(hsm.unloaded.size() == 6); // modules 1 and 2: 3 tokens each
    }
}

TEST_CASE("supervisor::Loader::forget_passphrases") {
    FakeHsm hsm;
    hsm.reachable = false;
    const auto before = SecureArena::instance().stats().bytes_in_use;
    std::vector<SecureBuffer> passphrases;
    passphrases.push_back(SecureBuffer::from("first passphrase"));
    Loader loader([&hsm] { return hsm.connect(); },
                  {{hsm::TokenType::softcard, "card", Bytes(20, 0xaa)}}, std::move(passphrases));
    REQUIRE(SecureArena::instance().stats().bytes_in_use > before);

    SUBCASE("before: a load is tried (and here finds no service)") {
        const auto result = loader.load_module(1);
        REQUIRE(result.error);
        CHECK(result.error->code() != ErrorCode::internal);
    }
    SUBCASE("after: the passphrases are gone, and a load says why it cannot run") {
        loader.forget_passphrases();
        CHECK(SecureArena::instance().stats().bytes_in_use == before); // released, so wiped
        const auto result = loader.load_module(1);
        REQUIRE(result.error);
        CHECK(result.error->code() == ErrorCode::internal);
        CHECK(std::string(result.error->what()).find("--no-ha") != std::string::npos);
        CHECK(result.handles.empty());
    }
}
