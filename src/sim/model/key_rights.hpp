#pragma once
// Who may remove a persistent key from the world. A token-protected key:
// only a caller who has that token loaded (who proved its passphrase), shown
// by a token object of the caller's on a module. A module-protected key:
// whoever manages the world (root, the service's own uid) and the uid that
// created the key, when the key file records it. Pure: the destroyer
// (destroyer.hpp) looks the objects up and calls these.

#include "model/world_format.hpp"
#include "preloadrun/hsm/types.hpp"

#include <sys/types.h>

namespace preloadrun::sim {

// Throws Error(permission), saying who may, unless `caller` may destroy the
// module-protected key `record` in a world served by `service_uid`.
void check_may_destroy(const KeyRecord& record, uid_t caller, uid_t service_uid);

// Throws Error(permission) unless `token` (the caller's own, already looked
// up by handle) is the token that protects `record`.
void check_token_protects(const KeyRecord& record, const hsm::TokenInfo& token,
                          hsm::ObjectHandle handle, std::uint32_t module);

} // namespace preloadrun::sim
