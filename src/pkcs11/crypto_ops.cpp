#include "crypto_ops.hpp"

#include "log.hpp"

#include <algorithm>
#include <cstring>

namespace preloadrun::pkcs11 {

namespace {

std::optional<Operation>& slot_of(Session& session, OpKind kind) {
    switch (kind) {
    case OpKind::sign:
        return session.sign;
    case OpKind::verify:
        return session.verify;
    case OpKind::encrypt:
        return session.encrypt;
    case OpKind::decrypt:
        break;
    }
    return session.decrypt;
}

CK_FLAGS purpose_of(OpKind kind) {
    switch (kind) {
    case OpKind::sign:
        return CKF_SIGN;
    case OpKind::verify:
        return CKF_VERIFY;
    case OpKind::encrypt:
        return CKF_ENCRYPT;
    case OpKind::decrypt:
        break;
    }
    return CKF_DECRYPT;
}

Operation& active(Session& session, OpKind kind) {
    auto& op = slot_of(session, kind);
    if (!op) {
        throw CkError(CKR_OPERATION_NOT_INITIALIZED, "no operation of this kind is active");
    }
    return *op;
}

// Which object classes may do what.
bool class_allowed(CK_OBJECT_CLASS cls, OpKind kind) {
    switch (kind) {
    case OpKind::sign:
        return cls == CKO_PRIVATE_KEY;
    case OpKind::verify:
        return cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY;
    case OpKind::encrypt:
        return cls == CKO_PUBLIC_KEY || cls == CKO_SECRET_KEY;
    case OpKind::decrypt:
        return cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
    }
    return false;
}

// The data the service gets: the digest for hashing mechanisms.
Bytes message(Operation& op, std::span<const std::uint8_t> input) {
    if (op.digest) {
        op.digest->update(input);
        return op.digest->finish();
    }
    Bytes data = std::move(op.buffer);
    data.insert(data.end(), input.begin(), input.end());
    return data;
}

// The most output an operation can produce, when known without doing it.
std::optional<std::size_t> output_bound(const Operation& op, OpKind kind, std::size_t input) {
    const auto& key = op.key->info;
    const std::size_t pending = op.buffer.size() + input;
    switch (kind) {
    case OpKind::sign:
        return signature_length(key);
    case OpKind::encrypt:
        if (key.type == hsm::KeyType::aes) {
            return pending + op.prepared.mechanism.tag_bits / 8;
        }
        return signature_length(key);
    case OpKind::decrypt:
        if (key.type == hsm::KeyType::aes) {
            const std::size_t tag = op.prepared.mechanism.tag_bits / 8;
            return pending > tag ? pending - tag : 0;
        }
        return signature_length(key);
    case OpKind::verify:
        break;
    }
    return std::nullopt;
}

Bytes compute(Instance& instance, Operation& op, OpKind kind, const Bytes& data) {
    const hsm::Mechanism mech = op.prepared.mechanism;
    // Sizes only: the data may be a plaintext, which no log may hold.
    logger().trace("operation on key {}: {} bytes", op.key->info.ident, data.size());
    try {
        return instance.router().run(
            *op.key, [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle h) {
                switch (kind) {
                case OpKind::sign:
                    return service.sign(m, h, mech, data);
                case OpKind::encrypt:
                    return service.encrypt(m, h, mech, data);
                default:
                    return service.decrypt(m, h, mech, data);
                }
            });
    } catch (const Error& e) {
        if (e.code() == ErrorCode::usage) {
            throw CkError(CKR_DATA_LEN_RANGE, e.what());
        }
        if (e.code() == ErrorCode::crypto) {
            throw CkError(kind == OpKind::decrypt   ? CKR_ENCRYPTED_DATA_INVALID
                          : kind == OpKind::encrypt ? CKR_DATA_LEN_RANGE
                                                    : CKR_FUNCTION_FAILED,
                          e.what());
        }
        throw;
    }
}

// Ends the operation unless told to keep it (length query, buffer too small).
class EndUnlessKept {
public:
    EndUnlessKept(Session& session, OpKind kind) : op_(slot_of(session, kind)) {}
    ~EndUnlessKept() {
        if (!keep_) {
            op_.reset();
        }
    }
    void keep() noexcept { keep_ = true; }

private:
    std::optional<Operation>& op_;
    bool keep_ = false;
};

void deliver(Instance& instance, Session& session, OpKind kind, std::span<const std::uint8_t> input,
             Output out) {
    require_arg(out.length, "output length pointer");
    EndUnlessKept end(session, kind);
    Operation& op = active(session, kind);
    if (!op.result) {
        const auto bound = output_bound(op, kind, input.size());
        if (out.data == nullptr && bound) {
            *out.length = *bound;
            end.keep();
            return;
        }
        if (bound && *out.length < *bound && kind == OpKind::sign) {
            *out.length = *bound;
            end.keep();
            throw CkError(CKR_BUFFER_TOO_SMALL, "signature buffer too small");
        }
        op.result = compute(instance, op, kind, message(op, input));
    }
    if (out.data == nullptr) {
        *out.length = op.result->size();
        end.keep();
        return;
    }
    if (*out.length < op.result->size()) {
        *out.length = op.result->size();
        end.keep();
        throw CkError(CKR_BUFFER_TOO_SMALL, "output buffer too small");
    }
    if (!op.result->empty()) {
        std::memcpy(out.data, op.result->data(), op.result->size());
    }
    *out.length = op.result->size();
}

} // namespace

void op_init(Instance& instance, Session& session, OpKind kind, const CK_MECHANISM* mechanism,
             CK_OBJECT_HANDLE key) {
    require_arg(mechanism, "mechanism");
    auto& op = slot_of(session, kind);
    if (op) {
        throw CkError(CKR_OPERATION_ACTIVE, "an operation of this kind is already active");
    }
    instance.before_operation_init();
    const auto ref = instance.objects().get(key);
    if (!ref || ref->key->slot != session.slot) {
        throw CkError(CKR_KEY_HANDLE_INVALID, "no such key in this session's slot");
    }
    if (!class_allowed(ref->cls, kind)) {
        throw CkError(CKR_KEY_FUNCTION_NOT_PERMITTED, "this key object cannot do that");
    }
    if (instance.objects().main_destroyed(*ref->key)) {
        // The HSMs verify with the key pair; once its private key is gone,
        // the public half is left to read, not to use.
        throw CkError(CKR_KEY_FUNCTION_NOT_PERMITTED,
                      "the private key of this public key object was destroyed: it cannot be "
                      "used any more");
    }
    if (ref->key->info.token && !instance.slots().logged_in(session.slot) &&
        (ref->cls != CKO_PUBLIC_KEY || !instance.slots().preloaded(session.slot))) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to use its keys");
    }
    Operation fresh;
    fresh.key = ref->key;
    fresh.prepared = prepare(*mechanism, ref->key->info, purpose_of(kind));
    if (!instance.offers(fresh.prepared.spec->kind)) {
        throw CkError(CKR_MECHANISM_INVALID,
                      "not every module of the fleet offers this mechanism (see "
                      "C_GetMechanismList)");
    }
    if (fresh.prepared.prehash != hsm::Hash::none) {
        fresh.digest.emplace(fresh.prepared.prehash);
    }
    op = std::move(fresh);
}

void op_single(Instance& instance, Session& session, OpKind kind,
               std::span<const std::uint8_t> input, Output output) {
    deliver(instance, session, kind, input, output);
}

void op_update(Session& session, OpKind kind, std::span<const std::uint8_t> input) {
    Operation& op = active(session, kind);
    try {
        op.multipart = true;
        if (op.digest) {
            op.digest->update(input);
        } else {
            op.buffer.insert(op.buffer.end(), input.begin(), input.end());
        }
    } catch (...) {
        slot_of(session, kind).reset();
        throw;
    }
}

void op_final(Instance& instance, Session& session, OpKind kind, Output output) {
    deliver(instance, session, kind, {}, output);
}

void op_verify(Instance& instance, Session& session, std::span<const std::uint8_t> data,
               std::span<const std::uint8_t> signature) {
    EndUnlessKept end(session, OpKind::verify);
    Operation& op = active(session, OpKind::verify);
    if (signature.size() != signature_length(op.key->info)) {
        throw CkError(CKR_SIGNATURE_LEN_RANGE, "signature of the wrong length for this key");
    }
    const Bytes input = message(op, data);
    const Bytes sig(signature.begin(), signature.end());
    const hsm::Mechanism mech = op.prepared.mechanism;
    try {
        instance.router().run(*op.key,
                              [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle h) {
                                  service.verify(m, h, mech, input, sig);
                                  return Bytes{};
                              });
    } catch (const Error& e) {
        if (e.code() == ErrorCode::bad_signature || e.code() == ErrorCode::crypto) {
            throw CkError(CKR_SIGNATURE_INVALID, e.what());
        }
        if (e.code() == ErrorCode::usage) {
            throw CkError(CKR_DATA_LEN_RANGE, e.what());
        }
        throw;
    }
}

Bytes random_bytes(Instance& instance, std::size_t length) {
    constexpr std::size_t kChunk = 65536;
    Bytes out;
    out.reserve(length);
    while (out.size() < length) {
        const auto n = static_cast<std::uint32_t>(std::min(kChunk, length - out.size()));
        auto part = instance.router().run_any(
            [n](hsm::Service& service, std::uint32_t m) { return service.random(m, n); });
        out.insert(out.end(), part.begin(), part.end());
    }
    return out;
}

} // namespace preloadrun::pkcs11
