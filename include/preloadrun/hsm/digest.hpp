#pragma once
// The OpenSSL digest of a Hash, for the code on both sides of the wire that
// hashes (the PKCS#11 module) or builds DigestInfo and PSS (hsmsim).

#include "preloadrun/hsm/types.hpp"

#include <openssl/evp.h>

namespace preloadrun::hsm {

// nullptr for Hash::none.
const EVP_MD* evp_md(Hash hash) noexcept;

} // namespace preloadrun::hsm
