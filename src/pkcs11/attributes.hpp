#pragma once
// The attributes of key objects: built once from the key's identity and
// public part (SubjectPublicKeyInfo), matched against C_FindObjects templates
// byte for byte, and copied out with C_GetAttributeValue's conventions.

#include "ck.hpp"
#include "preloadrun/hsm/types.hpp"

#include <map>
#include <optional>
#include <set>
#include <span>

namespace preloadrun::pkcs11 {

class Attributes {
public:
    void set(CK_ATTRIBUTE_TYPE type, Bytes value) { values_[type] = std::move(value); }
    void set_bool(CK_ATTRIBUTE_TYPE type, bool value);
    void set_ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value);
    // Exists, but its value never leaves the HSM (CKR_ATTRIBUTE_SENSITIVE).
    void set_sensitive(CK_ATTRIBUTE_TYPE type) { sensitive_.insert(type); }

    const Bytes* find(CK_ATTRIBUTE_TYPE type) const;
    // Every attribute of the template is present with exactly these bytes.
    bool matches(const CK_ATTRIBUTE* templ, CK_ULONG count) const;
    // C_GetAttributeValue: fills every entry it can (length query when
    // pValue is NULL); returns CKR_OK or the last problem met
    // (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL).
    CK_RV get(CK_ATTRIBUTE* templ, CK_ULONG count) const;

    // Every attribute with a value, for encoding an object's content.
    const std::map<CK_ATTRIBUTE_TYPE, Bytes>& values() const noexcept { return values_; }
    // The content of an object kept in the world (hsm::KeyType::object):
    // each attribute as type (8 bytes), length (4 bytes), value, little-endian.
    Bytes encode() const;
    // Throws Error(corrupt) for bytes encode() did not make.
    static Attributes decode(std::span<const std::uint8_t> bytes);

private:
    std::map<CK_ATTRIBUTE_TYPE, Bytes> values_;
    std::set<CK_ATTRIBUTE_TYPE> sensitive_;
};

// The public numbers of a key, parsed from its SubjectPublicKeyInfo.
struct PublicParts {
    Bytes modulus;         // RSA, big-endian
    Bytes public_exponent; // RSA
    Bytes ec_params;       // DER OID of the curve
    Bytes ec_point;        // DER OCTET STRING of the uncompressed point
    CK_ULONG modulus_bits = 0;
};
// Throws Error(corrupt) when the DER cannot be parsed.
PublicParts parse_public(const hsm::KeyInfo& key);

// The DER OID of a curve (for CKA_EC_PARAMS) and back.
Bytes ec_params_for(hsm::KeyType type);
std::optional<hsm::KeyType> curve_from_params(const Bytes& der);

CK_KEY_TYPE ck_key_type(hsm::KeyType type) noexcept;

// The attributes of one object of a key: CKO_PRIVATE_KEY or CKO_PUBLIC_KEY
// for RSA and EC keys, CKO_SECRET_KEY for AES. `is_private` is CKA_PRIVATE
// (private and secret keys of a token need its login to be seen).
Attributes key_attributes(const hsm::KeyInfo& key, const PublicParts& parts, CK_OBJECT_CLASS cls,
                          bool is_private);

// Reads typed values from a caller's template.
std::optional<Bytes> template_bytes(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                    CK_ATTRIBUTE_TYPE type);
std::optional<bool> template_bool(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                  CK_ATTRIBUTE_TYPE type);
std::optional<CK_ULONG> template_ulong(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                       CK_ATTRIBUTE_TYPE type);

} // namespace preloadrun::pkcs11
