#pragma once
// The objects C_CreateObject makes that are not keys on the HSMs: data
// objects (CKO_DATA), X.509 certificates (CKO_CERTIFICATE) and public keys
// on their own (CKO_PUBLIC_KEY, RSA or EC P-256/P-384). A session object
// lives in the process; a token object is kept in the world with the
// token's keys (hsm::KeyType::object, its attributes as content), so every
// process and every HSM of the fleet sees the same.

#include "attributes.hpp"
#include "ck.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <optional>

namespace preloadrun::pkcs11 {

// The largest content of a token object (the HSM service's limit).
inline constexpr std::size_t kMaxObjectContent = 32 * 1024;

// The attributes of a new object of class `cls` from the caller's template,
// checked, with the defaults PKCS#11 gives and those derived from the value
// (a certificate's subject, issuer and serial number, a public key's
// CKA_PUBLIC_KEY_INFO). Throws CkError: CKR_TEMPLATE_INCOMPLETE,
// CKR_ATTRIBUTE_VALUE_INVALID, CKR_TEMPLATE_INCONSISTENT,
// CKR_ATTRIBUTE_READ_ONLY.
Attributes plain_object_attributes(const CK_ATTRIBUTE* templ, CK_ULONG count, CK_OBJECT_CLASS cls);

// Whether C_CreateObject makes objects of this class with
// plain_object_attributes().
bool is_plain_class(CK_OBJECT_CLASS cls) noexcept;

// The key a public key object on its own stands for, from the attributes
// plain_object_attributes() gave it: its type, size and public_der
// (CKA_PUBLIC_KEY_INFO). nullopt for another object.
std::optional<hsm::KeyInfo> public_key_of(const Attributes& a);

// A private key from C_CreateObject's template (CKO_PRIVATE_KEY): RSA
// (CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, and the CRT
// values when given) or EC P-256/P-384 (CKA_EC_PARAMS, CKA_VALUE), as the
// PKCS#8 DER the HSM service imports; `type` and `bits` are set. Throws
// CkError as plain_object_attributes() does.
SecureBuffer private_key_pkcs8(const CK_ATTRIBUTE* templ, CK_ULONG count, hsm::KeyType& type,
                               std::uint32_t& bits);

// The attributes C_SetAttributeValue may change on a plain object.
bool plain_attribute_modifiable(CK_OBJECT_CLASS cls, CK_ATTRIBUTE_TYPE type) noexcept;

} // namespace preloadrun::pkcs11
