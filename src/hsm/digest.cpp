#include "preloadrun/hsm/digest.hpp"

namespace preloadrun::hsm {

const EVP_MD* evp_md(Hash hash) noexcept {
    switch (hash) {
    case Hash::none:
        return nullptr;
    case Hash::sha1:
        return EVP_sha1();
    case Hash::sha224:
        return EVP_sha224();
    case Hash::sha256:
        return EVP_sha256();
    case Hash::sha384:
        return EVP_sha384();
    case Hash::sha512:
        return EVP_sha512();
    case Hash::sha3_224:
        return EVP_sha3_224();
    case Hash::sha3_256:
        return EVP_sha3_256();
    case Hash::sha3_384:
        return EVP_sha3_384();
    case Hash::sha3_512:
        return EVP_sha3_512();
    }
    return nullptr;
}

} // namespace preloadrun::hsm
