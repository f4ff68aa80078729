#include "model/key_rights.hpp"

#include "preloadrun/common/error.hpp"

namespace preloadrun::sim {

namespace {

std::string describe(const Protection& protection) {
    return std::string(token_type_text(protection.type)) + " " + to_hex(protection.hash);
}

} // namespace

void check_may_destroy(const KeyRecord& record, uid_t caller, uid_t service_uid) {
    if (caller == 0 || caller == service_uid || (record.creator && *record.creator == caller)) {
        return;
    }
    throw Error(ErrorCode::permission,
                "uid " + std::to_string(caller) + " may not destroy module-protected key " +
                    record.ident + ": only root, the service's uid " + std::to_string(service_uid) +
                    (record.creator ? " and its creator, uid " + std::to_string(*record.creator)
                                    : std::string(" (its creator is not recorded)")) +
                    " may");
}

void check_token_protects(const KeyRecord& record, const hsm::TokenInfo& token,
                          hsm::ObjectHandle handle, std::uint32_t module) {
    if (!record.protection) {
        throw Error(ErrorCode::internal, "key " + record.ident + " is not token-protected");
    }
    if (token.hash != record.protection->hash || token.type != record.protection->type) {
        throw Error(ErrorCode::permission,
                    "token handle " + std::to_string(handle) + " on module " +
                        std::to_string(module) + " is " + std::string(token_type_text(token.type)) +
                        " " + to_hex(token.hash) + ", but key " + record.ident +
                        " is protected by " + describe(*record.protection) +
                        ": destroying it needs that token loaded with its passphrase");
    }
}

} // namespace preloadrun::sim
