#pragma once
// Sessions. The table has its own lock; each session has a mutex that a call
// on that session holds for its whole length (per-session locking: calls on
// different sessions run in parallel, calls on one session are serialised).

#include "ck.hpp"
#include "mechanisms.hpp"
#include "objects.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <vector>

namespace preloadrun::pkcs11 {

// An active sign/verify/encrypt/decrypt operation.
struct Operation {
    std::shared_ptr<KeyObject> key;
    Prepared prepared;
    std::optional<Digest> digest; // hashing mechanisms: data hashed as it comes
    // Other mechanisms: data collected as it comes; for the AES modes that
    // stream (ECB, CBC, CBC-PAD, CTR), what is left after the whole blocks
    // were done (prepared.mechanism.iv then chains: CBC's last ciphertext
    // block, CTR's next counter block).
    Bytes buffer;
    bool multipart = false; // an *Update was called
    // A public key object on its own (no HSM holds it): its
    // SubjectPublicKeyInfo DER, which the operation takes to an HSM.
    Bytes public_key;
    std::optional<Bytes> result; // output already computed (kept across a length query)
};

struct Session {
    std::mutex mutex;
    CK_SESSION_HANDLE handle = 0;
    CK_SLOT_ID slot = 0;
    CK_FLAGS flags = 0;
    std::optional<Operation> sign, verify, encrypt, decrypt;
    std::optional<Digest> digest; // C_DigestInit .. C_Digest or C_DigestFinal
    bool finding = false;
    std::vector<CK_OBJECT_HANDLE> found;
    std::size_t found_pos = 0;
};

class Sessions {
public:
    std::shared_ptr<Session> open(CK_SLOT_ID slot, CK_FLAGS flags);
    // Throws CkError(CKR_SESSION_HANDLE_INVALID).
    std::shared_ptr<Session> get(CK_SESSION_HANDLE handle) const;
    std::shared_ptr<Session> close(CK_SESSION_HANDLE handle);
    std::vector<std::shared_ptr<Session>> close_all(CK_SLOT_ID slot);
    CK_ULONG count(CK_SLOT_ID slot, bool rw_only) const;

private:
    mutable std::shared_mutex mutex_;
    std::map<CK_SESSION_HANDLE, std::shared_ptr<Session>> sessions_;
    CK_SESSION_HANDLE next_ = 1;
};

} // namespace preloadrun::pkcs11
