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

// A new key's CKA_TOKEN (false by default), CKA_LABEL, CKA_ID and
// CKA_EXTRACTABLE (false by default: a key leaves the HSMs only if made to).
void take_key_names(Template templ, hsm::KeySpec& spec);
// Throws unless `session` may make a key (logged in to a token slot; a
// read/write session for a token key; not an extractable token key of the
// accelerator slot, which every user of the service could load and wrap).
void check_session_may_create(Instance& instance, const Session& session, bool persistent,
                              bool extractable = false);
// The HSM service makes a key from `source` (loaded where it is, or loaded
// first) as `spec` says, `source`'s handle there given in spec.*from
// (copy_of, unwrap_with), under the session's token. A session key goes
// where the process's session keys live (Router::session_home). Returns the
// module that holds it.
std::pair<std::uint32_t, hsm::GeneratedKey> make_from(Instance& instance, Session& session,
                                                      KeyObject& source, const hsm::KeySpec& spec,
                                                      hsm::ObjectHandle hsm::KeySpec::*from);
// A key the service made on `module` becomes the process's object(s).
std::shared_ptr<KeyObject> adopt_key(Instance& instance, Session& session, std::uint32_t module,
                                     const hsm::GeneratedKey& made);

// Returns {public key handle, private key handle}.
std::pair<CK_OBJECT_HANDLE, CK_OBJECT_HANDLE> generate_key_pair(Instance& instance,
                                                                Session& session,
                                                                const CK_MECHANISM& mechanism,
                                                                Template pub, Template priv);
CK_OBJECT_HANDLE generate_secret_key(Instance& instance, Session& session,
                                     const CK_MECHANISM& mechanism, Template templ);
// C_CreateObject: a secret key (CKO_SECRET_KEY, CKK_AES or
// CKK_GENERIC_SECRET, with CKA_VALUE) is imported into the world (token)
// or onto one module (session), as a generated key is; a data object,
// certificate or public key (plain_objects.hpp) is kept in the world with
// the token's keys (token) or in the process (session).
CK_OBJECT_HANDLE create_object(Instance& instance, Session& session, Template templ);
// C_CopyObject: a key (private or secret) is copied by the HSM service
// under the same token, changing CKA_TOKEN, CKA_LABEL, CKA_ID; a plain
// object, or a key pair's public half, becomes a plain object.
CK_OBJECT_HANDLE copy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object,
                             Template templ);
// C_SetAttributeValue: a plain object's CKA_LABEL, CKA_ID, dates, subject,
// and a data object's value (plain_objects.hpp); keys refuse.
void set_attributes(Instance& instance, Session& session, CK_OBJECT_HANDLE object, Template templ);
void destroy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object);

} // namespace preloadrun::pkcs11
