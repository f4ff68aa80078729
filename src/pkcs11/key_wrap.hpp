#pragma once
// C_WrapKey and C_UnwrapKey. The HSMs do both: a key is wrapped on a module
// that holds it and the wrapping key, and the key's material never comes
// into the process in the clear; an unwrapped key is made on a module that
// holds the unwrapping key, as an imported key (a token key joins the world
// and is loaded and reloaded on every module like any other).
//
// Wrapping: CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD, CKM_AES_CBC_PAD,
// CKM_AES_CBC and CKM_AES_ECB under an AES key; CKM_RSA_PKCS and
// CKM_RSA_PKCS_OAEP (a secret key only) under an RSA key. A secret key is
// wrapped as its raw value, a private key as PKCS#8 PrivateKeyInfo DER. Only
// a key made with CKA_EXTRACTABLE true can be wrapped.

#include "ck.hpp"
#include "instance.hpp"
#include "object_lifecycle.hpp"

#include <span>

namespace preloadrun::pkcs11 {

// C_WrapKey: the wrapped key into `out` (NULL: its length only).
void wrap_key(Instance& instance, Session& session, const CK_MECHANISM& mechanism,
              CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key, CK_BYTE_PTR out,
              CK_ULONG_PTR out_length);
// C_UnwrapKey: the handle of the new key (for a private key, the private key
// object; its public half is an object too).
CK_OBJECT_HANDLE unwrap_key(Instance& instance, Session& session, const CK_MECHANISM& mechanism,
                            CK_OBJECT_HANDLE unwrapping_key, std::span<const std::uint8_t> wrapped,
                            Template templ);

} // namespace preloadrun::pkcs11
