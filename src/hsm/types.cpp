#include "preloadrun/hsm/types.hpp"

namespace preloadrun::hsm {

std::string_view to_string(ModuleState state) noexcept {
    switch (state) {
    case ModuleState::usable:
        return "usable";
    case ModuleState::initialising:
        return "initialising";
    case ModuleState::failed:
        return "failed";
    case ModuleState::removed:
        return "removed";
    }
    return "unknown";
}

std::string_view to_string(TokenType type) noexcept {
    switch (type) {
    case TokenType::softcard:
        return "softcard";
    case TokenType::cardset:
        return "cardset";
    }
    return "unknown";
}

std::string_view to_string(KeyType type) noexcept {
    switch (type) {
    case KeyType::rsa:
        return "rsa";
    case KeyType::ec_p256:
        return "ec-p256";
    case KeyType::ec_p384:
        return "ec-p384";
    case KeyType::aes:
        return "aes";
    }
    return "unknown";
}

std::string describe(const TokenInfo& token) {
    return std::string(to_string(token.type)) + " " + token.name;
}

} // namespace preloadrun::hsm
