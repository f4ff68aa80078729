#pragma once
// The names operators type for key types ("ec-p256") and protections
// ("softcard:NAME"), and their parsing.

#include "preloadrun/hsm/types.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace preloadrun::sim {

// "rsa-2048" -> {rsa, 2048}; throws Error(usage) listing the valid names.
hsm::KeySpec parse_key_type(std::string_view name);
// {rsa, 2048} -> "rsa-2048"; {ec_p256, 0} -> "ec-p256".
std::string key_type_name(hsm::KeyType type, std::uint32_t bits);

struct TokenRef {
    hsm::TokenType type = hsm::TokenType::softcard;
    std::string name;
};
struct ProtectionArg {
    std::optional<TokenRef> token; // nullopt: module
};
// "module" | "softcard:NAME" | "cardset:NAME"; throws Error(usage).
ProtectionArg parse_protection(std::string_view text);

} // namespace preloadrun::sim
