#include "model/key_rights.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::sim;
using testsupport::code_of;

namespace {

constexpr uid_t kService = 2100;

KeyRecord module_key(std::optional<uid_t> creator) {
    KeyRecord r;
    r.ident = std::string(40, 'a');
    r.creator = creator;
    return r;
}

hsm::TokenInfo token(hsm::TokenType type, std::uint8_t hash_byte) {
    return hsm::TokenInfo{type, "t", Bytes(hsm::kTokenHashSize, hash_byte)};
}

} // namespace

TEST_CASE("sim::check_may_destroy: root, the service's uid and the creator") {
    const auto by_2000 = module_key(2000);
    CHECK_NOTHROW(check_may_destroy(by_2000, 0, kService));
    CHECK_NOTHROW(check_may_destroy(by_2000, kService, kService));
    CHECK_NOTHROW(check_may_destroy(by_2000, 2000, kService));
    std::string message;
    CHECK(code_of([&] { check_may_destroy(by_2000, 2001, kService); }, &message) ==
          ErrorCode::permission);
    CHECK(message.find("uid 2001") != std::string::npos);
    CHECK(message.find("2100") != std::string::npos);

    const auto unknown = module_key(std::nullopt);
    CHECK_NOTHROW(check_may_destroy(unknown, 0, kService));
    CHECK_NOTHROW(check_may_destroy(unknown, kService, kService));
    CHECK(code_of([&] { check_may_destroy(unknown, 2000, kService); }) == ErrorCode::permission);
}

TEST_CASE("sim::check_token_protects: the same token, by type and hash") {
    KeyRecord r = module_key(2000);
    r.protection = Protection{hsm::TokenType::softcard, Bytes(hsm::kTokenHashSize, 0x11)};
    CHECK_NOTHROW(check_token_protects(r, token(hsm::TokenType::softcard, 0x11), 5, 1));
    std::string message;
    CHECK(code_of([&] { check_token_protects(r, token(hsm::TokenType::softcard, 0x12), 5, 1); },
                  &message) == ErrorCode::permission);
    CHECK(message.find("token handle 5 on module 1") != std::string::npos);
    CHECK(code_of([&] { check_token_protects(r, token(hsm::TokenType::cardset, 0x11), 5, 1); }) ==
          ErrorCode::permission);
    CHECK(code_of([&] {
              check_token_protects(module_key(2000), token(hsm::TokenType::softcard, 0x11), 5, 1);
          }) == ErrorCode::internal);
}
