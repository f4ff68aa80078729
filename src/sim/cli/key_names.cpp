#include "cli/key_names.hpp"

#include "preloadrun/common/error.hpp"

#include <array>

namespace preloadrun::sim {

namespace {

struct KeyTypeName {
    std::string_view name;
    hsm::KeyType type;
    std::uint32_t bits;
};

constexpr std::array<KeyTypeName, 8> kKeyTypes{{
    {"rsa-2048", hsm::KeyType::rsa, 2048},
    {"rsa-3072", hsm::KeyType::rsa, 3072},
    {"rsa-4096", hsm::KeyType::rsa, 4096},
    {"ec-p256", hsm::KeyType::ec_p256, 0},
    {"ec-p384", hsm::KeyType::ec_p384, 0},
    {"aes-128", hsm::KeyType::aes, 128},
    {"aes-192", hsm::KeyType::aes, 192},
    {"aes-256", hsm::KeyType::aes, 256},
}};

} // namespace

hsm::KeySpec parse_key_type(std::string_view name) {
    for (const auto& entry : kKeyTypes) {
        if (entry.name == name) {
            hsm::KeySpec spec;
            spec.type = entry.type;
            spec.bits = entry.bits;
            return spec;
        }
    }
    std::string valid;
    for (const auto& entry : kKeyTypes) {
        valid += valid.empty() ? "" : ", ";
        valid += entry.name;
    }
    throw Error(ErrorCode::usage,
                "unknown key type '" + std::string(name) + "' (use " + valid + ")");
}

std::string key_type_name(hsm::KeyType type, std::uint32_t bits) {
    switch (type) {
    case hsm::KeyType::rsa:
        return "rsa-" + std::to_string(bits);
    case hsm::KeyType::ec_p256:
        return "ec-p256";
    case hsm::KeyType::ec_p384:
        return "ec-p384";
    case hsm::KeyType::aes:
        return "aes-" + std::to_string(bits);
    case hsm::KeyType::generic_secret:
        return "generic-secret-" + std::to_string(bits);
    case hsm::KeyType::object:
        return "object";
    }
    return "unknown";
}

ProtectionArg parse_protection(std::string_view text) {
    if (text == "module") {
        return {};
    }
    for (auto type : {hsm::TokenType::softcard, hsm::TokenType::cardset}) {
        auto prefix = std::string(hsm::to_string(type)) + ":";
        if (text.starts_with(prefix) && text.size() > prefix.size()) {
            return ProtectionArg{TokenRef{type, std::string(text.substr(prefix.size()))}};
        }
    }
    throw Error(ErrorCode::usage, "bad protection '" + std::string(text) +
                                      "' (use module, softcard:NAME or cardset:NAME)");
}

} // namespace preloadrun::sim
