#pragma once
// What a service knows of tokens and keys, whatever its modules are: the
// Security World of simulated HSMs (world.hpp), or the token sets and keys of
// PKCS#11 members (member/member_catalog.hpp). The handler answers the
// listings and Hello from it.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace preloadrun::sim {

class Catalog {
public:
    virtual ~Catalog() = default;
    // Identifies the world (or the fleet) across restarts of the service.
    virtual const Bytes& id() const noexcept = 0;
    // The tokens in the order of their hashes, starting after the hash whose
    // hex is `after` ("": from the first), for as long as `visit` returns true.
    virtual void visit_tokens(std::string_view after,
                              const std::function<bool(const hsm::TokenInfo&)>& visit) const = 0;
    // The keys in ident order, starting after the ident `after`.
    virtual void visit_keys(std::string_view after,
                            const std::function<bool(const hsm::KeyInfo&)>& visit) const = 0;
    // Throws Error(usage) where tokens are not made through the service.
    virtual hsm::TokenInfo create_token(hsm::TokenType type, const std::string& name,
                                        const SecureBuffer& passphrase,
                                        std::optional<uid_t> creator) = 0;
};

} // namespace preloadrun::sim
