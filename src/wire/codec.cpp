#include "wire/codec.hpp"

#include "wire/bytes_field.hpp"
#include "wire/frame.hpp"
#include "wire/utf8.hpp"

#include <string>

namespace preloadrun::hsm::codec {

using detail::from_field;
using detail::to_field;

namespace {

[[noreturn]] void throw_bad_enum(const char* what, int value) {
    throw Error(ErrorCode::protocol, std::string("unknown ") + what + " value " +
                                         std::to_string(value) + " on the wire");
}

template <class Message> Bytes serialize(const Message& message) {
    const std::size_t size = message.ByteSizeLong();
    if (size > kMaxFrame) {
        throw Error(ErrorCode::limit, "message of " + std::to_string(size) +
                                          " bytes exceeds the frame limit of " +
                                          std::to_string(kMaxFrame));
    }
    Bytes out(size);
    if (size > 0 && !message.SerializeToArray(out.data(), static_cast<int>(size))) {
        throw Error(ErrorCode::internal, "cannot serialise a wire message");
    }
    return out;
}

template <class Message>
void parse_into(std::span<const std::uint8_t> bytes, Message& message, const char* what) {
    static constexpr std::uint8_t kEmpty = 0;
    const void* data = bytes.empty() ? &kEmpty : bytes.data();
    if (bytes.size() > kMaxFrame || !message.ParseFromArray(data, static_cast<int>(bytes.size()))) {
        throw Error(ErrorCode::protocol, std::string("malformed ") + what + " (" +
                                             std::to_string(bytes.size()) + " bytes)");
    }
}

template <class Message> Message parse(std::span<const std::uint8_t> bytes, const char* what) {
    Message message;
    parse_into(bytes, message, what);
    return message;
}

} // namespace

// ---- bytes ---------------------------------------------------------------------

Bytes encode(const wire::Request& request) {
    return serialize(request);
}
Bytes encode(const wire::ServerMessage& message) {
    return serialize(message);
}

void decode_request(std::span<const std::uint8_t> bytes, wire::Request& into) {
    parse_into(bytes, into, "request");
    if (into.body_case() == wire::Request::BODY_NOT_SET) {
        throw Error(ErrorCode::protocol, "request without a body (unknown or missing kind)");
    }
}

wire::Request decode_request(std::span<const std::uint8_t> bytes) {
    wire::Request request;
    decode_request(bytes, request);
    return request;
}

wire::ServerMessage decode_server_message(std::span<const std::uint8_t> bytes) {
    auto message = parse<wire::ServerMessage>(bytes, "server message");
    switch (message.kind_case()) {
    case wire::ServerMessage::kResponse:
        if (message.response().body_case() == wire::Response::BODY_NOT_SET) {
            throw Error(ErrorCode::protocol, "response without a body (unknown or missing kind)");
        }
        return message;
    case wire::ServerMessage::kEvent:
        return message;
    case wire::ServerMessage::KIND_NOT_SET:
        break;
    }
    throw Error(ErrorCode::protocol, "server message that is neither a response nor an event");
}

// ---- enums ---------------------------------------------------------------------

wire::ModuleState to_wire(ModuleState state) {
    switch (state) {
    case ModuleState::usable:
        return wire::MODULE_USABLE;
    case ModuleState::initialising:
        return wire::MODULE_INITIALISING;
    case ModuleState::failed:
        return wire::MODULE_FAILED;
    case ModuleState::removed:
        return wire::MODULE_REMOVED;
    }
    throw Error(ErrorCode::internal, "bad ModuleState");
}

ModuleState from_wire(wire::ModuleState state) {
    switch (state) {
    case wire::MODULE_USABLE:
        return ModuleState::usable;
    case wire::MODULE_INITIALISING:
        return ModuleState::initialising;
    case wire::MODULE_FAILED:
        return ModuleState::failed;
    case wire::MODULE_REMOVED:
        return ModuleState::removed;
    default:
        throw_bad_enum("module state", state);
    }
}

wire::TokenType to_wire(TokenType type) {
    switch (type) {
    case TokenType::softcard:
        return wire::TOKEN_SOFTCARD;
    case TokenType::cardset:
        return wire::TOKEN_CARDSET;
    }
    throw Error(ErrorCode::internal, "bad TokenType");
}

TokenType from_wire(wire::TokenType type) {
    switch (type) {
    case wire::TOKEN_SOFTCARD:
        return TokenType::softcard;
    case wire::TOKEN_CARDSET:
        return TokenType::cardset;
    default:
        throw_bad_enum("token type", type);
    }
}

wire::KeyType to_wire(KeyType type) {
    switch (type) {
    case KeyType::rsa:
        return wire::KEY_RSA;
    case KeyType::ec_p256:
        return wire::KEY_EC_P256;
    case KeyType::ec_p384:
        return wire::KEY_EC_P384;
    case KeyType::aes:
        return wire::KEY_AES;
    case KeyType::generic_secret:
        return wire::KEY_GENERIC_SECRET;
    case KeyType::object:
        return wire::KEY_OBJECT;
    }
    throw Error(ErrorCode::internal, "bad KeyType");
}

KeyType from_wire(wire::KeyType type) {
    switch (type) {
    case wire::KEY_RSA:
        return KeyType::rsa;
    case wire::KEY_EC_P256:
        return KeyType::ec_p256;
    case wire::KEY_EC_P384:
        return KeyType::ec_p384;
    case wire::KEY_AES:
        return KeyType::aes;
    case wire::KEY_GENERIC_SECRET:
        return KeyType::generic_secret;
    case wire::KEY_OBJECT:
        return KeyType::object;
    default:
        throw_bad_enum("key type", type);
    }
}

namespace {

struct HashName {
    Hash hash;
    wire::Hash on_wire;
};
constexpr HashName kHashes[] = {
    {Hash::none, wire::HASH_NONE},         {Hash::sha1, wire::HASH_SHA1},
    {Hash::sha224, wire::HASH_SHA224},     {Hash::sha256, wire::HASH_SHA256},
    {Hash::sha384, wire::HASH_SHA384},     {Hash::sha512, wire::HASH_SHA512},
    {Hash::sha3_224, wire::HASH_SHA3_224}, {Hash::sha3_256, wire::HASH_SHA3_256},
    {Hash::sha3_384, wire::HASH_SHA3_384}, {Hash::sha3_512, wire::HASH_SHA3_512},
};

struct KindName {
    MechanismKind kind;
    wire::MechanismKind on_wire;
};
constexpr KindName kKinds[] = {
    {MechanismKind::rsa_pkcs1, wire::MECH_RSA_PKCS1},
    {MechanismKind::rsa_pss, wire::MECH_RSA_PSS},
    {MechanismKind::rsa_oaep, wire::MECH_RSA_OAEP},
    {MechanismKind::ecdsa, wire::MECH_ECDSA},
    {MechanismKind::aes_gcm, wire::MECH_AES_GCM},
    {MechanismKind::rsa_pkcs1_enc, wire::MECH_RSA_PKCS1_ENC},
    {MechanismKind::aes_ecb, wire::MECH_AES_ECB},
    {MechanismKind::aes_cbc, wire::MECH_AES_CBC},
    {MechanismKind::aes_cbc_pad, wire::MECH_AES_CBC_PAD},
    {MechanismKind::aes_ctr, wire::MECH_AES_CTR},
    {MechanismKind::aes_cmac, wire::MECH_AES_CMAC},
    {MechanismKind::hmac, wire::MECH_HMAC},
    {MechanismKind::aes_key_wrap, wire::MECH_AES_KEY_WRAP},
    {MechanismKind::aes_key_wrap_pad, wire::MECH_AES_KEY_WRAP_PAD},
};

} // namespace

wire::Hash to_wire(Hash hash) {
    for (const auto& entry : kHashes) {
        if (entry.hash == hash) {
            return entry.on_wire;
        }
    }
    throw Error(ErrorCode::internal, "bad Hash");
}

Hash from_wire(wire::Hash hash) {
    for (const auto& entry : kHashes) {
        if (entry.on_wire == hash) {
            return entry.hash;
        }
    }
    throw_bad_enum("hash", hash);
}

namespace {

wire::MechanismKind kind_to_wire(MechanismKind kind) {
    for (const auto& entry : kKinds) {
        if (entry.kind == kind) {
            return entry.on_wire;
        }
    }
    throw Error(ErrorCode::internal, "bad MechanismKind");
}

MechanismKind kind_from_wire(wire::MechanismKind kind) {
    for (const auto& entry : kKinds) {
        if (entry.on_wire == kind) {
            return entry.kind;
        }
    }
    throw_bad_enum("mechanism", kind);
}

Bytes token_hash_from_wire(const std::string& field) {
    if (field.size() != kTokenHashSize) {
        throw Error(ErrorCode::protocol, "token hash of " + std::to_string(field.size()) +
                                             " bytes on the wire, expected " +
                                             std::to_string(kTokenHashSize));
    }
    return from_field(field);
}

} // namespace

// ---- structures -------------------------------------------------------------------

wire::Mechanism to_wire(const Mechanism& mech) {
    wire::Mechanism out;
    out.set_kind(kind_to_wire(mech.kind));
    out.set_hash(to_wire(mech.hash));
    out.set_mgf_hash(to_wire(mech.mgf_hash));
    out.set_salt_len(mech.salt_len);
    // An empty bytes field is the default (not sent): setting one would
    // allocate a string for nothing, on every signature.
    if (!mech.label.empty()) {
        out.set_label(to_field(mech.label));
    }
    if (!mech.iv.empty()) {
        out.set_iv(to_field(mech.iv));
    }
    if (!mech.aad.empty()) {
        out.set_aad(to_field(mech.aad));
    }
    out.set_tag_bits(mech.tag_bits);
    out.set_counter_bits(mech.counter_bits);
    return out;
}

Mechanism from_wire(const wire::Mechanism& mech) {
    Mechanism out;
    out.kind = kind_from_wire(mech.kind());
    out.hash = from_wire(mech.hash());
    out.mgf_hash = from_wire(mech.mgf_hash());
    out.salt_len = mech.salt_len();
    out.label = from_field(mech.label());
    out.iv = from_field(mech.iv());
    out.aad = from_field(mech.aad());
    out.tag_bits = mech.tag_bits();
    out.counter_bits = mech.counter_bits();
    return out;
}

wire::ModuleInfo to_wire(const ModuleInfo& info) {
    wire::ModuleInfo out;
    out.set_number(info.number);
    out.set_esn(info.esn);
    out.set_state(to_wire(info.state));
    out.set_generation(info.generation);
    out.set_latency_ms(info.latency_ms);
    out.set_ops(info.ops);
    out.set_ops_failed(info.ops_failed);
    out.set_objects(info.objects);
    out.set_fail_next(info.fail_next);
    out.set_drained(info.drained);
    for (auto kind : info.lacks) {
        out.add_lacks(kind_to_wire(kind));
    }
    return out;
}

ModuleInfo from_wire(const wire::ModuleInfo& info) {
    ModuleInfo out;
    out.number = info.number();
    out.esn = info.esn();
    out.state = from_wire(info.state());
    out.generation = info.generation();
    out.latency_ms = info.latency_ms();
    out.ops = info.ops();
    out.ops_failed = info.ops_failed();
    out.objects = info.objects();
    out.fail_next = info.fail_next();
    out.drained = info.drained();
    for (int kind : info.lacks()) {
        try {
            out.lacks.push_back(kind_from_wire(static_cast<wire::MechanismKind>(kind)));
        } catch (const Error&) {
            // A kind this side does not know: it cannot ask for it either.
        }
    }
    return out;
}

wire::TokenInfo to_wire(const TokenInfo& info) {
    wire::TokenInfo out;
    out.set_type(to_wire(info.type));
    out.set_name(info.name);
    out.set_hash(to_field(info.hash));
    return out;
}

TokenInfo from_wire(const wire::TokenInfo& info) {
    return {from_wire(info.type()), info.name(), token_hash_from_wire(info.hash())};
}

// A key's token travels as (token_hash, token_type), without its name: a
// module-protected key has an empty token_hash and TOKEN_TYPE_UNSPECIFIED.
wire::KeyInfo to_wire(const KeyInfo& info) {
    wire::KeyInfo out;
    out.set_ident(info.ident);
    out.set_label(info.label);
    out.set_id(to_field(info.id));
    out.set_type(to_wire(info.type));
    out.set_bits(info.bits);
    out.set_persistent(info.persistent);
    if (info.token) {
        out.set_token_hash(to_field(info.token->hash));
        out.set_token_type(to_wire(info.token->type));
    }
    out.set_public_der(to_field(info.public_der));
    out.set_extractable(info.extractable);
    out.set_imported(info.imported);
    out.set_check_value(to_field(info.check_value));
    return out;
}

KeyInfo from_wire(const wire::KeyInfo& info) {
    KeyInfo out;
    out.ident = info.ident();
    out.label = info.label();
    out.id = from_field(info.id());
    out.type = from_wire(info.type());
    out.bits = info.bits();
    out.persistent = info.persistent();
    if (!info.token_hash().empty()) {
        out.token =
            TokenInfo{from_wire(info.token_type()), {}, token_hash_from_wire(info.token_hash())};
    }
    out.public_der = from_field(info.public_der());
    out.extractable = info.extractable();
    out.imported = info.imported();
    out.check_value = from_field(info.check_value());
    return out;
}

wire::Event to_wire(const ModuleEvent& event) {
    wire::Event out;
    out.set_sequence(event.sequence);
    *out.mutable_module() = to_wire(event.module);
    out.set_previous_state(to_wire(event.previous_state));
    out.set_previous_generation(event.previous_generation);
    out.set_snapshot(event.snapshot);
    return out;
}

// previous_state UNSPECIFIED (a module that did not exist before) reads as
// the module's current state.
ModuleEvent from_wire(const wire::Event& event) {
    ModuleEvent out;
    out.sequence = event.sequence();
    out.module = from_wire(event.module());
    out.previous_state = event.previous_state() == wire::MODULE_STATE_UNSPECIFIED
                             ? out.module.state
                             : from_wire(event.previous_state());
    out.previous_generation = event.previous_generation();
    out.snapshot = event.snapshot();
    return out;
}

// ---- errors ------------------------------------------------------------------------
//
// Each code's wire value is its row's in error_table.def: lossless both ways.
// A value unknown to this build (a newer service) reads as `internal`, keeping
// the service's message: the message matters more than the code.

wire::ErrorCode to_wire(ErrorCode code) {
    return static_cast<wire::ErrorCode>(error_info(code).wire);
}

ErrorCode from_wire(wire::ErrorCode code) {
    for (const ErrorInfo& row : kErrorTable) {
        if (static_cast<int>(row.wire) == static_cast<int>(code)) {
            return row.code;
        }
    }
    return ErrorCode::internal;
}

Error from_wire(const wire::Error& error) {
    return Error(from_wire(error.code()), error.message(), Origin::peer);
}

wire::Response error_response(std::uint64_t id, const Error& error) {
    wire::Response out;
    out.set_id(id);
    auto* body = out.mutable_error();
    body->set_code(to_wire(error.code()));
    body->set_message(detail::to_utf8(error.what()));
    return out;
}

} // namespace preloadrun::hsm::codec
