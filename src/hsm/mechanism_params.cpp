#include "preloadrun/hsm/mechanism_params.hpp"

#include <string_view>

namespace preloadrun::hsm {

bool gcm_tag_bits_allowed(std::uint32_t bits) noexcept {
    return bits >= 96 && bits <= 128 && bits % 8 == 0;
}

std::string gcm_parameter_problem(std::size_t iv_bytes, std::uint32_t tag_bits) {
    if (iv_bytes < kGcmMinIvBytes || iv_bytes > kGcmMaxIvBytes) {
        return "AES-GCM IV of " + std::to_string(iv_bytes) + " bytes refused: it must be " +
               std::to_string(kGcmMinIvBytes) + " to " + std::to_string(kGcmMaxIvBytes) +
               " bytes (12 recommended)";
    }
    if (!gcm_tag_bits_allowed(tag_bits)) {
        return "AES-GCM tag of " + std::to_string(tag_bits) +
               " bits refused: it must be 96, 104, 112, 120 or 128 bits";
    }
    return {};
}

namespace {

std::string iv_problem(std::string_view name, std::size_t got, std::size_t want) {
    if (got == want) {
        return {};
    }
    return std::string(name) +
           (want == 0 ? " takes no IV" : " needs an IV of " + std::to_string(want) + " bytes") +
           ", got " + std::to_string(got) + " bytes";
}

} // namespace

std::string mechanism_parameter_problem(const Mechanism& mech) {
    const std::size_t iv = mech.iv.size();
    switch (mech.kind) {
    case MechanismKind::aes_gcm:
        return gcm_parameter_problem(iv, mech.tag_bits);
    case MechanismKind::aes_ecb:
        return iv_problem("AES-ECB", iv, 0);
    case MechanismKind::aes_cmac:
        return iv_problem("AES-CMAC", iv, 0);
    case MechanismKind::aes_cbc:
        return iv_problem("AES-CBC", iv, kAesBlock);
    case MechanismKind::aes_cbc_pad:
        return iv_problem("AES-CBC-PAD", iv, kAesBlock);
    case MechanismKind::aes_ctr:
        if (mech.counter_bits == 0 || mech.counter_bits > 128) {
            return "AES-CTR counter of " + std::to_string(mech.counter_bits) +
                   " bits refused: it must be 1 to 128 bits";
        }
        return iv_problem("AES-CTR", iv, kAesBlock);
    case MechanismKind::aes_key_wrap:
        return iv == 0 ? std::string() : iv_problem("AES key wrap (RFC 3394)", iv, 8);
    case MechanismKind::aes_key_wrap_pad:
        return iv == 0 ? std::string() : iv_problem("AES key wrap with padding (RFC 5649)", iv, 4);
    case MechanismKind::hmac:
        return mech.hash == Hash::none ? "HMAC needs a hash" : std::string();
    case MechanismKind::rsa_pkcs1:
    case MechanismKind::rsa_pss:
    case MechanismKind::rsa_oaep:
    case MechanismKind::ecdsa:
    case MechanismKind::rsa_pkcs1_enc:
        break;
    }
    return {};
}

} // namespace preloadrun::hsm
