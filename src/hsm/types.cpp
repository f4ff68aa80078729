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
    case KeyType::generic_secret:
        return "generic-secret";
    case KeyType::object:
        return "object";
    }
    return "unknown";
}

const std::vector<MechanismKind>& all_mechanism_kinds() {
    static const std::vector<MechanismKind> all{
        MechanismKind::rsa_pkcs1,    MechanismKind::rsa_pss,         MechanismKind::rsa_oaep,
        MechanismKind::ecdsa,        MechanismKind::aes_gcm,         MechanismKind::rsa_pkcs1_enc,
        MechanismKind::aes_ecb,      MechanismKind::aes_cbc,         MechanismKind::aes_cbc_pad,
        MechanismKind::aes_ctr,      MechanismKind::aes_cmac,        MechanismKind::hmac,
        MechanismKind::aes_key_wrap, MechanismKind::aes_key_wrap_pad};
    return all;
}

std::string describe(const TokenInfo& token) {
    return std::string(to_string(token.type)) + " " + token.name;
}

} // namespace preloadrun::hsm
