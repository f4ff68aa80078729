#pragma once
// Objects made and destroyed through the module: C_GenerateKeyPair (RSA, EC
// P-256/P-384), C_GenerateKey (AES), C_DestroyObject. CKA_TOKEN true makes a persistent key
// of the world, protected by the session's token (or by the modules in the
// accelerator slot); CKA_TOKEN false makes a session key that lives on the
// one module that generated it.

#include "ck.hpp"
#include "instance.hpp"

#include <utility>

namespace preloadrun::pkcs11 {

struct Template {
    const CK_ATTRIBUTE* attrs;
    CK_ULONG count;
};

// Returns {public key handle, private key handle}.
std::pair<CK_OBJECT_HANDLE, CK_OBJECT_HANDLE> generate_key_pair(Instance& instance,
                                                                Session& session,
                                                                const CK_MECHANISM& mechanism,
                                                                Template pub, Template priv);
CK_OBJECT_HANDLE generate_secret_key(Instance& instance, Session& session,
                                     const CK_MECHANISM& mechanism, Template templ);
// C_CreateObject: a secret key (CKO_SECRET_KEY, CKK_AES or
// CKK_GENERIC_SECRET, with CKA_VALUE) is imported into the world (token)
// or onto one module (session), as a generated key is.
CK_OBJECT_HANDLE create_object(Instance& instance, Session& session, Template templ);
void destroy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object);

} // namespace preloadrun::pkcs11
