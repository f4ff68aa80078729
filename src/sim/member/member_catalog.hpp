#pragma once
// The tokens and keys of a fleet of PKCS#11 members (model/catalog.hpp):
// one token per token set of the configuration, and the keys found on the
// sets' member tokens. A key is known by its set, CKA_ID and key type; its
// public key (SubjectPublicKeyInfo) is the one seen first on any member, and
// a member holding a different key under that id and type is never used for
// it (is_refused), with one log line naming the member and the key.

#include "member/fleet_config.hpp"
#include "model/catalog.hpp"
#include "worker.pb.h"

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace preloadrun::sim::member {

// A key as one member holds it: the library's handles.
struct DeviceKey {
    std::uint64_t private_handle = 0;
    std::uint64_t public_handle = 0; // 0: no public key object
    Bytes public_der;
};

// A key of the catalog, as a member must hold it.
struct CatalogKey {
    hsm::KeyInfo info;          // ident, label, CKA_ID, type, bits, token, public_der
    std::uint64_t key_type = 0; // CKK_RSA or CKK_EC
};

class MemberCatalog final : public Catalog {
public:
    // `id`: identifies the fleet (kTokenHashSize bytes).
    explicit MemberCatalog(Bytes id) : id_(std::move(id)) {}

    // The token of set `name`: a softcard named like the set.
    static hsm::TokenInfo token_of(const std::string& set);

    // The token sets (on start and when the configuration is re-read).
    void set_sets(const std::vector<TokenSetConfig>& sets);
    // What `member` (of `set`) holds: its keys join the catalog, and the
    // ones that differ from the catalog's are refused for that member.
    // Returns the keys it may serve, by ident.
    std::map<std::string, DeviceKey> add_inventory(const std::string& member,
                                                   const std::string& set,
                                                   const worker::InventoryReply& inventory);
    // The key `ident`; Error(not_found) when there is none.
    CatalogKey key(const std::string& ident) const;
    bool is_refused(const std::string& member, const std::string& ident) const;
    // Refuses `ident` on `member` (its key there was found to differ).
    void refuse(const std::string& member, const std::string& ident, const std::string& why);

    // ---- Catalog ----
    const Bytes& id() const noexcept override { return id_; }
    void visit_tokens(std::string_view after,
                      const std::function<bool(const hsm::TokenInfo&)>& visit) const override;
    void visit_keys(std::string_view after,
                    const std::function<bool(const hsm::KeyInfo&)>& visit) const override;
    hsm::TokenInfo create_token(hsm::TokenType type, const std::string& name,
                                const SecureBuffer& passphrase,
                                std::optional<uid_t> creator) override;

    // The ident of the key of `set` with this CKA_ID and PKCS#11 key type.
    static std::string ident_of(const std::string& set, const Bytes& id, std::uint64_t key_type);

private:
    const Bytes id_;
    mutable std::mutex mutex_;
    std::map<std::string, hsm::TokenInfo> tokens_;           // by hash (hex)
    std::map<std::string, CatalogKey> keys_;                 // by ident
    std::set<std::pair<std::string, std::string>> refused_;  // (member, ident)
    std::set<std::pair<std::string, std::string>> unusable_; // logged once: (member, id hex)
};

} // namespace preloadrun::sim::member
