#include "crypto_ops.hpp"

#include "log.hpp"
#include "plain_objects.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"

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
        return cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
    case OpKind::verify:
        return cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
    case OpKind::encrypt:
        return cls == CKO_PUBLIC_KEY || cls == CKO_SECRET_KEY;
    case OpKind::decrypt:
        return cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
    }
    return false;
}

// A public key object on its own verifies and encrypts as the key pair
// would: the key it stands for, or nullptr for another object.
std::shared_ptr<KeyObject> standalone_public_key(const ObjectStore::Ref& ref) {
    if (ref.cls != CKO_PUBLIC_KEY || !hsm::is_object(ref.key->info.type)) {
        return nullptr;
    }
    const auto stands_for = public_key_of(ref.attributes());
    if (!stands_for) {
        return nullptr;
    }
    auto key = std::make_shared<KeyObject>();
    key->info = ref.key->info;
    key->info.type = stands_for->type;
    key->info.bits = stands_for->bits;
    key->info.public_der = stands_for->public_der;
    key->slot = ref.key->slot;
    key->session = ref.key->session;
    key->public_handle = ref.handle;
    return key;
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
    const auto& mech = op.prepared.mechanism;
    const std::size_t pending = op.buffer.size() + input;
    constexpr std::size_t block = hsm::kAesBlock;
    if (kind == OpKind::sign) {
        return signature_length(op.prepared, key);
    }
    if (kind == OpKind::verify) {
        return std::nullopt;
    }
    const bool encrypt = kind == OpKind::encrypt;
    switch (mech.kind) {
    case hsm::MechanismKind::aes_gcm: {
        const std::size_t tag = mech.tag_bits / 8;
        return encrypt ? pending + tag : (pending > tag ? pending - tag : 0);
    }
    case hsm::MechanismKind::aes_ecb:
    case hsm::MechanismKind::aes_cbc:
    case hsm::MechanismKind::aes_ctr:
        return pending;
    case hsm::MechanismKind::aes_cbc_pad:
        return encrypt ? (pending / block + 1) * block : pending;
    case hsm::MechanismKind::aes_key_wrap:
        return encrypt ? pending + 8 : (pending > 8 ? pending - 8 : 0);
    case hsm::MechanismKind::aes_key_wrap_pad:
        return encrypt ? (pending + 7) / 8 * 8 + 8 : (pending > 8 ? pending - 8 : 0);
    default:
        return signature_length(op.prepared, key);
    }
}

// The lengths a mode refuses, with the code PKCS#11 gives them, before the
// service is asked.
void check_input_length(const Operation& op, OpKind kind, std::size_t size) {
    const bool encrypt = kind == OpKind::encrypt;
    const CK_RV code = encrypt ? CKR_DATA_LEN_RANGE : CKR_ENCRYPTED_DATA_LEN_RANGE;
    switch (op.prepared.mechanism.kind) {
    case hsm::MechanismKind::aes_ecb:
    case hsm::MechanismKind::aes_cbc:
        if (size % hsm::kAesBlock != 0) {
            throw CkError(code, "AES-ECB and AES-CBC take whole 16-byte blocks");
        }
        return;
    case hsm::MechanismKind::aes_cbc_pad:
        if (!encrypt && (size == 0 || size % hsm::kAesBlock != 0)) {
            throw CkError(code, "an AES-CBC-PAD ciphertext is whole 16-byte blocks");
        }
        return;
    default:
        return;
    }
}

Bytes compute(Instance& instance, Operation& op, OpKind kind, const Bytes& data) {
    const hsm::Mechanism mech = op.prepared.mechanism;
    // Sizes only: the data may be a plaintext, which no log may hold.
    logger().trace("operation on key {}: {} bytes", op.key->info.ident, data.size());
    try {
        if (!op.public_key.empty()) {
            // Encrypting with a public key no HSM holds: any HSM does it.
            return instance.router().run_any([&](hsm::Service& service, std::uint32_t m) {
                return service.encrypt_public(m, op.public_key, mech, data);
            });
        }
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
        if (kind == OpKind::encrypt || kind == OpKind::decrypt) {
            check_input_length(op, kind, op.buffer.size() + input.size());
        }
        const auto mode = op.prepared.mechanism.kind;
        if (op.multipart && input.empty() && op.buffer.empty() &&
            (mode == hsm::MechanismKind::aes_ecb || mode == hsm::MechanismKind::aes_cbc ||
             mode == hsm::MechanismKind::aes_ctr)) {
            op.result = Bytes{}; // every block was output by the updates
        } else {
            op.result = compute(instance, op, kind, message(op, input));
        }
        if (kind == OpKind::sign && hsm::is_mac(op.prepared.mechanism.kind)) {
            op.result->resize(op.prepared.mac_length); // a *_GENERAL MAC's prefix
        }
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
    if (auto standalone = standalone_public_key(*ref)) {
        fresh.key = std::move(standalone);
        fresh.public_key = fresh.key->info.public_der;
    }
    fresh.prepared = prepare(*mechanism, fresh.key->info, purpose_of(kind));
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

namespace {

bool streams(hsm::MechanismKind kind) {
    return kind == hsm::MechanismKind::aes_ecb || kind == hsm::MechanismKind::aes_cbc ||
           kind == hsm::MechanismKind::aes_cbc_pad || kind == hsm::MechanismKind::aes_ctr;
}

// CTR's counter block after `blocks` blocks (big-endian; the service
// refuses data that would carry beyond the counter bits).
void advance_counter(Bytes& counter, std::size_t blocks) {
    std::uint64_t carry = blocks;
    for (std::size_t i = counter.size(); i-- > 0 && carry != 0;) {
        carry += counter[i];
        counter[i] = static_cast<std::uint8_t>(carry & 0xff);
        carry >>= 8;
    }
}

} // namespace

void op_update_crypt(Instance& instance, Session& session, OpKind kind,
                     std::span<const std::uint8_t> input, Output output) {
    require_arg(output.length, "output length pointer");
    Operation& op = active(session, kind);
    auto& mech = op.prepared.mechanism;
    constexpr std::size_t block = hsm::kAesBlock;
    const std::size_t pending = op.buffer.size() + input.size();
    if (output.data == nullptr) {
        // A length that suffices, as the standard allows, and never 0 for
        // data: callers that size their buffer from it (PyKCS11 passes NULL
        // again for an empty one) then give a buffer, and the data is taken.
        *output.length = input.empty() ? 0 : (pending + block) / block * block;
        return;
    }
    if (!streams(mech.kind)) {
        op_update(session, kind, input);
        *output.length = 0;
        return;
    }
    std::size_t ready = pending / block * block;
    if (kind == OpKind::decrypt && mech.kind == hsm::MechanismKind::aes_cbc_pad &&
        ready == pending && ready > 0) {
        ready -= block; // the last block holds the padding: for the final call
    }
    if (*output.length < ready) {
        *output.length = ready;
        throw CkError(CKR_BUFFER_TOO_SMALL, "output buffer too small");
    }
    op.multipart = true;
    op.buffer.insert(op.buffer.end(), input.begin(), input.end());
    if (ready == 0) {
        *output.length = 0;
        return;
    }
    try {
        Bytes part(op.buffer.begin(), op.buffer.begin() + static_cast<std::ptrdiff_t>(ready));
        // The whole blocks in the mode without padding, from where the
        // previous part ended.
        Operation step;
        step.key = op.key;
        step.prepared = op.prepared;
        if (mech.kind == hsm::MechanismKind::aes_cbc_pad) {
            step.prepared.mechanism.kind = hsm::MechanismKind::aes_cbc;
        }
        Bytes done = compute(instance, step, kind, part);
        if (done.size() != ready) {
            throw Error(ErrorCode::protocol, "the HSM service returned " +
                                                 std::to_string(done.size()) + " bytes for " +
                                                 std::to_string(ready));
        }
        if (mech.kind == hsm::MechanismKind::aes_ctr) {
            advance_counter(mech.iv, ready / block);
        } else if (mech.kind != hsm::MechanismKind::aes_ecb) {
            const Bytes& cipher = kind == OpKind::encrypt ? done : part;
            mech.iv.assign(cipher.end() - block, cipher.end());
        }
        op.buffer.erase(op.buffer.begin(), op.buffer.begin() + static_cast<std::ptrdiff_t>(ready));
        std::memcpy(output.data, done.data(), done.size());
        *output.length = done.size();
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
    if (signature.size() != signature_length(op.prepared, op.key->info)) {
        throw CkError(CKR_SIGNATURE_LEN_RANGE, "signature of the wrong length for this key");
    }
    const Bytes input = message(op, data);
    if (hsm::is_mac(op.prepared.mechanism.kind)) {
        // The MAC is made again (any module of the key's) and compared here:
        // a *_GENERAL MAC is a prefix of it.
        const Bytes mac = compute(instance, op, OpKind::sign, input);
        if (mac.size() < signature.size() ||
            !constant_time_equal(mac.data(), signature.data(), signature.size())) {
            throw CkError(CKR_SIGNATURE_INVALID, "the MAC does not match");
        }
        return;
    }
    const Bytes sig(signature.begin(), signature.end());
    const hsm::Mechanism mech = op.prepared.mechanism;
    try {
        if (!op.public_key.empty()) {
            // A public key no HSM holds: any HSM verifies with it.
            instance.router().run_any([&](hsm::Service& service, std::uint32_t m) {
                service.verify_public(m, op.public_key, mech, input, sig);
                return Bytes{};
            });
        } else {
            instance.router().run(*op.key,
                                  [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle h) {
                                      service.verify(m, h, mech, input, sig);
                                      return Bytes{};
                                  });
        }
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
