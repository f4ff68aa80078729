#pragma once
// RAII owners for the OpenSSL objects hsmsim uses, and the one helper that
// turns OpenSSL's error queue into a preloadrun::Error.

#include "preloadrun/common/error.hpp"

#include <memory>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <string_view>

namespace preloadrun::sim::ossl {

template <auto Free> struct Deleter {
    template <class T> void operator()(T* p) const noexcept { Free(p); }
};

using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX_free>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG_free>>;

// Throws Error(code) with "what: <OpenSSL's first queued error>", and empties
// this thread's OpenSSL error queue.
[[noreturn]] void fail(ErrorCode code, std::string_view what);

// Empties this thread's OpenSSL error queue (after an expected failure).
void clear_errors() noexcept;

} // namespace preloadrun::sim::ossl
