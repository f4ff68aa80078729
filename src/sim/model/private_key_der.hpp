#pragma once
// Private keys from their DER form, fast enough for a fleet's reload.
//
// OpenSSL 3's d2i_AutoPrivateKey builds a decoder context on every call, and
// building it is most of the work: about 350 us for an EC P-256 key here,
// against under 20 us to run a context kept for the key's type. A fleet of
// modules cleared at once makes hsmsim unwrap every key of the world again,
// so decoder contexts are kept (a few per key type, each used by one thread
// at a time) and run again.

#include "model/ossl.hpp"
#include "preloadrun/hsm/types.hpp"

#include <cstdint>
#include <span>

namespace preloadrun::sim {

// The private key in `der`: PKCS#8 PrivateKeyInfo (what Key::private_bytes()
// writes) for the fast way, else any form d2i_AutoPrivateKey_ex takes. `type`
// says which decoders to try first (RSA, or EC for the others); a key of
// another type still decodes, by the slow way. Null when it does not decode;
// OpenSSL's error queue is then left as d2i_AutoPrivateKey_ex left it.
ossl::Pkey decode_private_key(std::span<const std::uint8_t> der, hsm::KeyType type);

} // namespace preloadrun::sim
