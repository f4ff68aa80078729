#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_arena.hpp"
#include "supervisor/loader.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::supervisor;

TEST_CASE("supervisor::Loader::forget_passphrases") {
    testsupport::TempDir dir;
    hsm::Endpoint nowhere;
    nowhere.socket_path = (dir / "no-service.sock").string(); // nothing listens here
    const auto before = SecureArena::instance().stats().bytes_in_use;
    std::vector<SecureBuffer> passphrases;
    passphrases.push_back(SecureBuffer::from("first passphrase"));
    Loader loader(nowhere, {{hsm::TokenType::softcard, "card", Bytes(20, 0xaa)}},
                  std::move(passphrases));
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
