#pragma once
// Slots and their tokens. Slot 0 is the accelerator: module-protected keys
// and session objects, no login. Slots 1.. are the world's softcards and card
// sets, one each, in the service's order; their keys need C_Login. A token
// slot remembers, per module, the handle of its token there (from the tokens
// file, or loaded by C_Login itself) and whether the application logged in.

#include "ck.hpp"
#include "preloadrun/hsm/types.hpp"

#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace preloadrun::pkcs11 {

inline constexpr CK_SLOT_ID kAcceleratorSlot = 0;

struct TokenHandle {
    hsm::ObjectHandle handle = 0;
    std::uint64_t module_generation = 0;
    bool operator==(const TokenHandle&) const = default;
};

class Slots {
public:
    Slots(std::vector<hsm::TokenInfo> tokens, bool load_sharing);

    CK_ULONG count() const noexcept { return static_cast<CK_ULONG>(tokens_.size()); }
    // Throws CkError(CKR_SLOT_ID_INVALID).
    void check(CK_SLOT_ID slot) const;
    // nullopt for the accelerator.
    const std::optional<hsm::TokenInfo>& token(CK_SLOT_ID slot) const;
    std::optional<CK_SLOT_ID> slot_of_token(const Bytes& hash) const;
    std::optional<CK_SLOT_ID> slot_of_token_hex(const std::string& hash_hex) const;
    // The slot a world key is shown in (nullopt: its token is unknown here).
    std::optional<CK_SLOT_ID> slot_of(const hsm::KeyInfo& key) const;

    void slot_info(CK_SLOT_ID slot, CK_SLOT_INFO& info) const;
    void token_info(CK_SLOT_ID slot, CK_TOKEN_INFO& info) const;

    // Listed in a live tokens file: C_Login accepts any PIN.
    void set_preloaded(CK_SLOT_ID slot, bool preloaded);
    bool preloaded(CK_SLOT_ID slot) const;

    bool logged_in(CK_SLOT_ID slot) const;
    void set_logged_in(CK_SLOT_ID slot, bool logged_in);

    std::optional<TokenHandle> handle(CK_SLOT_ID slot, std::uint32_t module) const;
    std::map<std::uint32_t, TokenHandle> handles(CK_SLOT_ID slot) const;
    void set_handle(CK_SLOT_ID slot, std::uint32_t module, TokenHandle handle);
    void forget_handle(CK_SLOT_ID slot, std::uint32_t module);

private:
    struct State {
        bool preloaded = false;
        bool logged_in = false;
        std::map<std::uint32_t, TokenHandle> handles;
    };

    std::vector<std::optional<hsm::TokenInfo>> tokens_; // index = slot id
    bool load_sharing_;
    mutable std::mutex mutex_;
    std::vector<State> state_;
};

} // namespace preloadrun::pkcs11
