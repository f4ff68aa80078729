#pragma once
// The service's mechanisms (preloadrun/hsm/types.hpp) as PKCS#11 mechanisms,
// for a member's worker: the CK_MECHANISM with its parameters, and the input
// the member's library takes. The service signs digests; a library's
// CKM_RSA_PKCS signs a DigestInfo, so the digest is wrapped in one here.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/types.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace preloadrun::sim::member {

enum class Use { sign, verify, encrypt, decrypt };

// One call's mechanism. Throws Error(usage) for a mechanism the use does not
// take (AES-GCM to sign, say).
class MechanismCall {
public:
    MechanismCall(const hsm::Mechanism& mech, const Bytes& data, Use use);
    MechanismCall(const MechanismCall&) = delete;
    MechanismCall& operator=(const MechanismCall&) = delete;

    CK_MECHANISM* mechanism() noexcept { return &mechanism_; }
    Bytes& input() noexcept { return input_; }

private:
    CK_MECHANISM mechanism_{};
    Bytes input_;
    Bytes label_;
    Bytes iv_;
    Bytes aad_;
    CK_RSA_PKCS_PSS_PARAMS pss_{};
    CK_RSA_PKCS_OAEP_PARAMS oaep_{};
    CK_GCM_PARAMS gcm_{};
};

// The PKCS#11 mechanism a library must offer for `mech` (CKM_ECDSA, ...).
CK_MECHANISM_TYPE mechanism_type(hsm::MechanismKind kind);

// The service's mechanisms that a library offering `offered` (its
// C_GetMechanismList) cannot do.
std::vector<hsm::MechanismKind> lacked_kinds(std::span<const std::uint64_t> offered);

} // namespace preloadrun::sim::member
