#pragma once
// Owning pointers for OpenSSL objects: each frees its object with the
// function OpenSSL made for it, so that no path forgets one. Header-only;
// whoever includes it links OpenSSL::Crypto for the functions it calls.
//
//   ossl::Pkey key(d2i_PUBKEY(nullptr, &p, length));
//   ossl::Owned<X509_PUBKEY, X509_PUBKEY_free> spki(d2i_X509_PUBKEY(...));

#include <memory>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

namespace preloadrun::ossl {

template <auto Free> struct Deleter {
    template <class T> void operator()(T* p) const noexcept { Free(p); }
};

// A T that Free frees.
template <class T, auto Free> using Owned = std::unique_ptr<T, Deleter<Free>>;

using Pkey = Owned<EVP_PKEY, EVP_PKEY_free>;
using PkeyCtx = Owned<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using CipherCtx = Owned<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>;
using MdCtx = Owned<EVP_MD_CTX, EVP_MD_CTX_free>;
using Bignum = Owned<BIGNUM, BN_free>;
using EcdsaSig = Owned<ECDSA_SIG, ECDSA_SIG_free>;
using Bio = Owned<BIO, BIO_free>;

} // namespace preloadrun::ossl
