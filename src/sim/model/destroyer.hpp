#pragma once
// Destroys persistent keys and tokens: removes them from the Security World
// if the caller may (key_rights.hpp), in the name of a token the caller has
// loaded on a module (of whichever kind: module.hpp) where one protects
// them, and unloads what was loaded from them on every module, whoever
// loaded it: its handles become invalid. Arguments are validated by the
// handler before they get here. (The other operations of a caller are the
// module's own: Fleet::module(number).)

#include "model/fleet.hpp"
#include "model/world.hpp"
#include "preloadrun/hsm/types.hpp"

#include <sys/types.h>
#include <unistd.h>

namespace preloadrun::sim {

class Destroyer {
public:
    // service_uid: the uid the service runs as, which manages the world (see
    // destroy_key).
    Destroyer(World& world, Fleet& fleet, uid_t service_uid = ::geteuid())
        : world_(world), fleet_(fleet), service_uid_(service_uid) {}

    // Removes a persistent key from the world, if `uid` may (key_rights.hpp):
    // for a token-protected key, token_handle is the caller's handle of that
    // token on `module`; for a module-protected key it is 0 (and `module` is
    // not used). Throws Error(permission) saying what is needed otherwise.
    void destroy_key(std::uint32_t module, const std::string& ident, hsm::ObjectHandle token_handle,
                     uid_t uid);
    // Removes a softcard or card set from the world (World::destroy_token),
    // if `uid` has it loaded: token_handle is the caller's handle of that
    // token on `module`. Throws Error(permission) otherwise.
    void destroy_token(std::uint32_t module, const Bytes& token_hash,
                       hsm::ObjectHandle token_handle, bool with_keys, uid_t uid);

private:
    // Unloads every object loaded from the persistent key `ident`, on every
    // module; how many went.
    std::size_t unload_key(const std::string& ident);

    World& world_;
    Fleet& fleet_;
    uid_t service_uid_;
};

} // namespace preloadrun::sim
