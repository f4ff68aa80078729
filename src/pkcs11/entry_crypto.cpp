// Entry points for cryptographic operations, key generation and random.

#include "crypto_ops.hpp"
#include "entry.hpp"
#include "key_wrap.hpp"
#include "mechanisms.hpp"
#include "object_lifecycle.hpp"

namespace preloadrun::pkcs11::entry {

// ---- cryptographic operations ------------------------------------------------------

CK_RV EncryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_EncryptInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::encrypt, mech, key);
        return CKR_OK;
    });
}

CK_RV Encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept {
    return guard("C_Encrypt", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::encrypt, in(data, len), {out, out_len});
        return CKR_OK;
    });
}

CK_RV EncryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
                    CK_ULONG_PTR out_len) noexcept {
    return guard("C_EncryptUpdate", [&] {
        auto call = with_session(handle);
        op_update_crypt(*call.instance, *call.session, OpKind::encrypt, in(data, len),
                        {out, out_len});
        return CKR_OK;
    });
}

CK_RV EncryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept {
    return guard("C_EncryptFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::encrypt, {out, out_len});
        return CKR_OK;
    });
}

CK_RV DecryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_DecryptInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::decrypt, mech, key);
        return CKR_OK;
    });
}

CK_RV Decrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept {
    return guard("C_Decrypt", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::decrypt, in(data, len), {out, out_len});
        return CKR_OK;
    });
}

CK_RV DecryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
                    CK_ULONG_PTR out_len) noexcept {
    return guard("C_DecryptUpdate", [&] {
        auto call = with_session(handle);
        op_update_crypt(*call.instance, *call.session, OpKind::decrypt, in(data, len),
                        {out, out_len});
        return CKR_OK;
    });
}

CK_RV DecryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept {
    return guard("C_DecryptFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::decrypt, {out, out_len});
        return CKR_OK;
    });
}

// ---- digests (in this process, with OpenSSL: nothing secret is involved) ----

CK_RV DigestInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech) noexcept {
    return guard("C_DigestInit", [&] {
        auto call = with_session(handle);
        require_arg(mech, "mechanism");
        if (call.session->digest) {
            throw CkError(CKR_OPERATION_ACTIVE, "a digest is already active");
        }
        const auto* spec = find_digest(mech->mechanism);
        if (spec == nullptr) {
            throw CkError(CKR_MECHANISM_INVALID, "not a digest mechanism this module offers");
        }
        if (mech->ulParameterLen != 0) {
            throw CkError(CKR_MECHANISM_PARAM_INVALID, "digests take no parameter");
        }
        call.session->digest.emplace(*spec);
        return CKR_OK;
    });
}

namespace {

// The session's active digest; CKR_OPERATION_NOT_INITIALIZED without one.
pkcs11::Digest& active_digest(Session& session) {
    if (!session.digest) {
        throw CkError(CKR_OPERATION_NOT_INITIALIZED, "no digest is active (C_DigestInit)");
    }
    return *session.digest;
}

// Ends the active digest into `out` (a length query or a buffer too small
// keeps it active). `input`: C_Digest's data, hashed first.
void finish_digest(Session& session, std::span<const std::uint8_t> input, Output out) {
    require_arg(out.length, "output length pointer");
    auto& digest = active_digest(session);
    const auto size = digest.size();
    if (out.data == nullptr) {
        *out.length = size;
        return;
    }
    if (*out.length < size) {
        *out.length = size;
        throw CkError(CKR_BUFFER_TOO_SMALL, "digest buffer too small");
    }
    try {
        digest.update(input);
        const auto result = digest.finish();
        std::memcpy(out.data, result.data(), result.size());
        *out.length = result.size();
    } catch (...) {
        session.digest.reset();
        throw;
    }
    session.digest.reset();
}

} // namespace

CK_RV Digest(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
             CK_ULONG_PTR out_len) noexcept {
    return guard("C_Digest", [&] {
        auto call = with_session(handle);
        finish_digest(*call.session, in(data, len), {out, out_len});
        return CKR_OK;
    });
}

CK_RV DigestUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept {
    return guard("C_DigestUpdate", [&] {
        auto call = with_session(handle);
        auto& digest = active_digest(*call.session);
        try {
            digest.update(in(data, len));
        } catch (...) {
            call.session->digest.reset();
            throw;
        }
        return CKR_OK;
    });
}

CK_RV DigestKey(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE) noexcept {
    return guard("C_DigestKey", [&] {
        auto call = with_session(handle);
        active_digest(*call.session);
        // A key's value never leaves the HSMs: not even into a digest.
        call.session->digest.reset();
        throw CkError(CKR_KEY_INDIGESTIBLE, "the key's value stays in the HSMs");
        return CKR_OK;
    });
}

CK_RV DigestFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept {
    return guard("C_DigestFinal", [&] {
        auto call = with_session(handle);
        finish_digest(*call.session, {}, {out, out_len});
        return CKR_OK;
    });
}

CK_RV SignInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_SignInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::sign, mech, key);
        return CKR_OK;
    });
}

CK_RV Sign(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
           CK_ULONG_PTR sig_len) noexcept {
    return guard("C_Sign", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::sign, in(data, len), {sig, sig_len});
        return CKR_OK;
    });
}

CK_RV SignUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept {
    return guard("C_SignUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::sign, in(data, len));
        return CKR_OK;
    });
}

CK_RV SignFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) noexcept {
    return guard("C_SignFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::sign, {sig, sig_len});
        return CKR_OK;
    });
}

CK_RV SignRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept {
    return guard("C_SignRecoverInit", not_supported);
}
CK_RV SignRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_SignRecover", not_supported);
}

CK_RV VerifyInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_VerifyInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::verify, mech, key);
        return CKR_OK;
    });
}

CK_RV Verify(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
             CK_ULONG sig_len) noexcept {
    return guard("C_Verify", [&] {
        auto call = with_session(handle);
        op_verify(*call.instance, *call.session, in(data, len), in(sig, sig_len));
        return CKR_OK;
    });
}

CK_RV VerifyUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept {
    return guard("C_VerifyUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::verify, in(data, len));
        return CKR_OK;
    });
}

CK_RV VerifyFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG sig_len) noexcept {
    return guard("C_VerifyFinal", [&] {
        auto call = with_session(handle);
        op_verify(*call.instance, *call.session, {}, in(sig, sig_len));
        return CKR_OK;
    });
}

CK_RV VerifyRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept {
    return guard("C_VerifyRecoverInit", not_supported);
}
CK_RV VerifyRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_VerifyRecover", not_supported);
}
CK_RV DigestEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DigestEncryptUpdate", not_supported);
}
CK_RV DecryptDigestUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DecryptDigestUpdate", not_supported);
}
CK_RV SignEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                        CK_ULONG_PTR) noexcept {
    return guard("C_SignEncryptUpdate", not_supported);
}
CK_RV DecryptVerifyUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DecryptVerifyUpdate", not_supported);
}

// ---- keys and random ------------------------------------------------------------------

CK_RV GenerateKey(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR templ,
                  CK_ULONG count, CK_OBJECT_HANDLE_PTR key) noexcept {
    return guard("C_GenerateKey", [&] {
        auto call = with_session(handle);
        require_arg(key, "key handle pointer");
        *key = generate_secret_key(*call.instance, *call.session, *require_arg(mech, "mechanism"),
                                   {templ, count});
        return CKR_OK;
    });
}

CK_RV GenerateKeyPair(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pub,
                      CK_ULONG pub_count, CK_ATTRIBUTE_PTR priv, CK_ULONG priv_count,
                      CK_OBJECT_HANDLE_PTR pub_key, CK_OBJECT_HANDLE_PTR priv_key) noexcept {
    return guard("C_GenerateKeyPair", [&] {
        auto call = with_session(handle);
        require_arg(pub_key, "public key handle pointer");
        require_arg(priv_key, "private key handle pointer");
        auto [p, k] =
            generate_key_pair(*call.instance, *call.session, *require_arg(mech, "mechanism"),
                              {pub, pub_count}, {priv, priv_count});
        *pub_key = p;
        *priv_key = k;
        return CKR_OK;
    });
}

CK_RV WrapKey(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE wrapping_key,
              CK_OBJECT_HANDLE key, CK_BYTE_PTR wrapped, CK_ULONG_PTR wrapped_len) noexcept {
    return guard("C_WrapKey", [&] {
        auto call = with_session(handle);
        wrap_key(*call.instance, *call.session, *require_arg(mech, "mechanism"), wrapping_key, key,
                 wrapped, wrapped_len);
        return CKR_OK;
    });
}
CK_RV UnwrapKey(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE unwrapping_key,
                CK_BYTE_PTR wrapped, CK_ULONG wrapped_len, CK_ATTRIBUTE_PTR templ, CK_ULONG count,
                CK_OBJECT_HANDLE_PTR key) noexcept {
    return guard("C_UnwrapKey", [&] {
        auto call = with_session(handle);
        require_arg(key, "key handle pointer");
        if (wrapped_len > 0) {
            require_arg(wrapped, "wrapped key");
        }
        *key = unwrap_key(*call.instance, *call.session, *require_arg(mech, "mechanism"),
                          unwrapping_key, {wrapped, wrapped_len}, {templ, count});
        return CKR_OK;
    });
}
CK_RV DeriveKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                CK_OBJECT_HANDLE_PTR) noexcept {
    return guard("C_DeriveKey", not_supported);
}

CK_RV SeedRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR, CK_ULONG) noexcept {
    return guard("C_SeedRandom", [&] {
        with_session(handle);
        return CKR_RANDOM_SEED_NOT_SUPPORTED;
    });
}

CK_RV GenerateRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG len) noexcept {
    return guard("C_GenerateRandom", [&] {
        auto call = with_session(handle);
        if (len == 0) {
            return CKR_OK;
        }
        require_arg(out, "output buffer");
        const Bytes bytes = random_bytes(*call.instance, len);
        std::memcpy(out, bytes.data(), bytes.size());
        return CKR_OK;
    });
}

CK_RV GetFunctionStatus(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_GetFunctionStatus", [&] {
        with_session(handle);
        return CKR_FUNCTION_NOT_PARALLEL;
    });
}

CK_RV CancelFunction(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_CancelFunction", [&] {
        with_session(handle);
        return CKR_FUNCTION_NOT_PARALLEL;
    });
}

CK_RV WaitForSlotEvent(CK_FLAGS, CK_SLOT_ID_PTR, CK_VOID_PTR) noexcept {
    return guard("C_WaitForSlotEvent", not_supported);
}

} // namespace preloadrun::pkcs11::entry
