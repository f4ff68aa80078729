#pragma once
// The operations a client asks of the service's modules, each routed to the
// module it names (of whichever kind: module.hpp), and the removal of
// persistent keys and tokens from the world, in the name of a token the
// caller loaded (key_rights.hpp). Arguments are validated by the handler
// before they get here. What is loaded or generated belongs to the caller's
// uid and to its client (the process: it goes when the process's last
// connection closes, Fleet::unload_client).

#include "preloadrun/hsm/types.hpp"
#include "sim/model/fleet.hpp"
#include "sim/model/world.hpp"

#include <sys/types.h>
#include <unistd.h>

namespace preloadrun::sim {

class Engine {
public:
    // service_uid: the uid the service runs as, which manages the world (see
    // destroy_key).
    Engine(World& world, Fleet& fleet, uid_t service_uid = ::geteuid())
        : world_(world), fleet_(fleet), service_uid_(service_uid) {}

    // See Module::load_token (a simulated module checks the passphrase
    // before it takes the module: only adding the token waits for it).
    hsm::ObjectHandle load_token(std::uint32_t module, const Bytes& token_hash,
                                 const SecureBuffer& passphrase, uid_t uid, ClientId client);
    // token_handle: the handle of the key's token on the same module, 0 for a
    // module-protected key.
    hsm::ObjectHandle load_key(std::uint32_t module, const std::string& ident,
                               hsm::ObjectHandle token_handle, uid_t uid, ClientId client);
    void unload(std::uint32_t module, hsm::ObjectHandle handle, uid_t uid);
    // A persistent key records `uid` as its creator.
    hsm::GeneratedKey generate_key(std::uint32_t module, const hsm::KeySpec& spec, uid_t uid,
                                   ClientId client);
    // Removes a persistent key from the world, if `uid` may (key_rights.hpp):
    // for a token-protected key, token_handle is the caller's handle of that
    // token on `module`; for a module-protected key it is 0 (and `module` is
    // not used). Throws Error(permission) saying what is needed otherwise.
    void destroy_key(std::uint32_t module, const std::string& ident, hsm::ObjectHandle token_handle,
                     uid_t uid);
    // Removes a softcard or card set from the world (World::destroy_token),
    // if `uid` has it loaded: token_handle is the caller's handle of that
    // token on `module`. Throws Error(permission) otherwise.
    //
    // destroy_key and destroy_token unload what was loaded from what they
    // removed, on every module, whoever loaded it: its handles become
    // invalid.
    void destroy_token(std::uint32_t module, const Bytes& token_hash,
                       hsm::ObjectHandle token_handle, bool with_keys, uid_t uid);

    Bytes sign(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
               const Bytes& data, uid_t uid);
    void verify(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                const Bytes& data, const Bytes& signature, uid_t uid);
    Bytes encrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data, uid_t uid);
    Bytes decrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data, uid_t uid);
    Bytes random(std::uint32_t module, std::uint32_t length, uid_t uid);

private:
    // Unloads every object loaded from the persistent key `ident`, on every
    // module; how many went.
    std::size_t unload_key(const std::string& ident);

    World& world_;
    Fleet& fleet_;
    uid_t service_uid_;
};

} // namespace preloadrun::sim
