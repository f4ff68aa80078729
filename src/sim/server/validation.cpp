#include "server/validation.hpp"

#include "model/crypto.hpp"
#include "model/world_format.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"
#include "preloadrun/hsm/rsa_exponent.hpp"
#include "wire/codec.hpp"

namespace preloadrun::sim::validate {

namespace {

[[noreturn]] void bad(const std::string& message) {
    throw Error(ErrorCode::usage, message);
}

hsm::Hash hash(wire::Hash value, const char* field) {
    if (!wire::Hash_IsValid(value)) {
        bad(std::string("unknown ") + field + " " + std::to_string(static_cast<int>(value)));
    }
    return hsm::codec::from_wire(value);
}

Bytes bytes_of(const std::string& s) {
    return Bytes(s.begin(), s.end());
}

} // namespace

std::uint32_t module_number(std::uint32_t number, std::uint32_t module_count) {
    if (number == 0 || number > module_count) {
        throw Error(ErrorCode::not_found,
                    "no module " + std::to_string(number) +
                        (module_count == 0
                             ? std::string(" (no module is enrolled)")
                             : " (modules are 1.." + std::to_string(module_count) + ")"));
    }
    return number;
}

hsm::TokenType token_type(wire::TokenType type) {
    switch (type) {
    case wire::TOKEN_SOFTCARD:
        return hsm::TokenType::softcard;
    case wire::TOKEN_CARDSET:
        return hsm::TokenType::cardset;
    default:
        bad("token type must be softcard or cardset");
    }
}

hsm::KeyType key_type(wire::KeyType type) {
    switch (type) {
    case wire::KEY_RSA:
        return hsm::KeyType::rsa;
    case wire::KEY_EC_P256:
        return hsm::KeyType::ec_p256;
    case wire::KEY_EC_P384:
        return hsm::KeyType::ec_p384;
    case wire::KEY_AES:
        return hsm::KeyType::aes;
    case wire::KEY_GENERIC_SECRET:
        return hsm::KeyType::generic_secret;
    case wire::KEY_OBJECT:
        return hsm::KeyType::object;
    default:
        bad("key type must be RSA, EC P-256, EC P-384, AES, generic secret or object");
    }
}

const std::string& token_name(const std::string& name) {
    if (!valid_token_name(name)) {
        bad("invalid token name (1..64 characters of A-Z a-z 0-9 . _ -)");
    }
    return name;
}

Bytes token_hash(const std::string& hash) {
    if (hash.size() != hsm::kTokenHashSize) {
        bad("a token hash is " + std::to_string(hsm::kTokenHashSize) + " bytes, got " +
            std::to_string(hash.size()));
    }
    return bytes_of(hash);
}

const std::string& ident(const std::string& ident) {
    if (!valid_ident(ident)) {
        bad("invalid key ident (40 lowercase hex digits)");
    }
    return ident;
}

const std::string& key_cursor(const std::string& after) {
    if (!after.empty() && !valid_ident(after)) {
        bad("invalid listing cursor: the ident of a key (40 lowercase hex digits) or empty");
    }
    return after;
}

const std::string& token_cursor(const std::string& after) {
    if (!after.empty() && !(after.size() == 2 * hsm::kTokenHashSize && valid_ident(after))) {
        bad("invalid listing cursor: the hash of a token (40 lowercase hex digits) or empty");
    }
    return after;
}

SecureBuffer passphrase(const std::string& passphrase, bool required) {
    if (passphrase.size() > kMaxPassphrase) {
        bad("passphrase longer than " + std::to_string(kMaxPassphrase) + " bytes");
    }
    if (required && passphrase.empty()) {
        bad("the passphrase must not be empty");
    }
    return SecureBuffer(passphrase.data(), passphrase.size());
}

// An RSA public exponent (hsm/rsa_exponent.hpp) without leading zero
// bytes; empty when none is asked for (65537).
Bytes public_exponent(hsm::KeyType type, const std::string& field) {
    if (field.empty()) {
        return {};
    }
    if (type != hsm::KeyType::rsa) {
        bad("a public exponent is for RSA keys only");
    }
    auto exponent = hsm::rsa_public_exponent(bytes_of(field));
    if (!exponent.problem.empty()) {
        bad(exponent.problem);
    }
    return std::move(exponent.value);
}

hsm::KeySpec key_spec(const wire::GenerateKey& request) {
    hsm::KeySpec spec;
    spec.copy_of = request.copy_of();
    // A copy is of the key it copies: its type and size are not asked.
    spec.type = spec.copy_of != 0 ? hsm::KeyType::rsa : key_type(request.type());
    // An unwrapped key may leave its size (0) to the key itself.
    const bool own_size = spec.copy_of != 0 || (request.unwrap_with() != 0 && request.bits() == 0);
    spec.bits = own_size ? 0 : normalise_bits(spec.type, request.bits());
    if (request.label().size() > kMaxLabel) {
        bad("label longer than " + std::to_string(kMaxLabel) + " bytes");
    }
    if (request.id().size() > kMaxId) {
        bad("id longer than " + std::to_string(kMaxId) + " bytes");
    }
    spec.label = request.label();
    spec.id = bytes_of(request.id());
    spec.persistent = request.persistent();
    spec.token_handle = request.token_handle();
    spec.refuse_duplicate = request.refuse_duplicate();
    spec.extractable = request.extractable();
    if (spec.copy_of != 0) {
        if (!request.value().empty() || !request.public_exponent().empty() ||
            request.unwrap_with() != 0 || request.extractable()) {
            bad("a copy takes no key material, no public exponent, and is as extractable as its "
                "key");
        }
        return spec;
    }
    spec.unwrap_with = request.unwrap_with();
    if (spec.unwrap_with != 0) {
        if (request.value().empty()) {
            bad("an unwrapped key needs the wrapped key");
        }
        if (hsm::is_object(spec.type)) {
            bad("an object is stored, not unwrapped");
        }
        spec.unwrap_mechanism = mechanism(request.unwrap_mechanism());
        if (!hsm::is_wrap(spec.unwrap_mechanism.kind)) {
            bad("not a mechanism that unwraps keys");
        }
    } else if (request.has_unwrap_mechanism()) {
        bad("an unwrap mechanism without a key to unwrap with");
    }
    spec.public_exponent = public_exponent(spec.type, request.public_exponent());
    if (!request.value().empty()) {
        if (!spec.public_exponent.empty()) {
            bad("an imported key has its own public exponent");
        }
        if (request.value().size() > kMaxKeyValue) {
            bad("key material longer than " + std::to_string(kMaxKeyValue) + " bytes");
        }
        spec.value = SecureBuffer(request.value().data(), request.value().size());
    } else if (spec.type == hsm::KeyType::object) {
        bad("an object is stored, not generated: its content is needed");
    }
    return spec;
}

Bytes public_key(const std::string& field) {
    if (field.empty() || field.size() > kMaxKeyValue) {
        bad("a public key of 1 to " + std::to_string(kMaxKeyValue) + " bytes is needed");
    }
    return bytes_of(field);
}

hsm::Mechanism mechanism(const wire::Mechanism& mech) {
    if (mech.kind() == wire::MECH_UNSPECIFIED || !wire::MechanismKind_IsValid(mech.kind())) {
        bad("unknown or missing mechanism");
    }
    const auto digest = hash(mech.hash(), "hash");
    const auto mgf = hash(mech.mgf_hash(), "MGF1 hash");
    hsm::Mechanism out = hsm::codec::from_wire(mech);
    out.hash = digest;
    out.mgf_hash = mgf;
    out.tag_bits = mech.tag_bits() == 0 ? hsm::kGcmDefaultTagBits : mech.tag_bits();
    out.counter_bits = mech.counter_bits() == 0 ? 128 : mech.counter_bits();
    if (auto problem = hsm::mechanism_parameter_problem(out); !problem.empty()) {
        bad(problem);
    }
    return out;
}

std::uint32_t random_length(std::uint32_t length) {
    if (length > kMaxRandom) {
        bad("at most " + std::to_string(kMaxRandom) + " random bytes per request, asked for " +
            std::to_string(length));
    }
    return length;
}

} // namespace preloadrun::sim::validate
