#pragma once
// The objects loaded on one module (tokens and keys), each owned by the uid
// that loaded or generated it, with two limits: how many the module holds
// in all, and how many one uid may hold on it (its share, so that one user
// cannot fill a module for everyone). Each object also records the client
// (the process, clients.hpp) that loaded it: when that client goes, so do
// its objects. Not thread-safe: Module locks it.

#include "model/crypto.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <sys/types.h>
#include <vector>

namespace preloadrun::sim {

// A client of the service: one process, from its first connection to its
// last (clients.hpp). Never reused.
using ClientId = std::uint64_t;
inline constexpr ClientId kNoClient = 0; // held until unloaded or cleared

inline constexpr std::size_t kMaxObjectsPerModule = 100000;
inline constexpr std::size_t kDefaultMaxObjectsPerUid = 10000;

struct ObjectLimits {
    std::size_t per_module = kMaxObjectsPerModule;
    std::size_t per_uid = kDefaultMaxObjectsPerUid; // hsmsim serve --max-objects-per-uid
};

struct TokenObject {
    hsm::TokenInfo info;
    SecureBuffer key; // the unlocked token key
};

struct KeyObject {
    hsm::KeyInfo info;
    std::shared_ptr<const Key> key;     // a simulated HSM's; null on a PKCS#11 member
    hsm::ObjectHandle token_handle = 0; // the token it was loaded under; 0: module-protected
};

// Handles are reserved in blocks of this many: one write to the world per block.
inline constexpr hsm::ObjectHandle kHandleBlock = 65536;

// Where a table's handles start and how it reserves more: every handle it
// issues was reserved first, so that a restarted service, which starts from
// what was reserved, never issues a handle again.
struct HandleRange {
    hsm::ObjectHandle first = 1;
    hsm::ObjectHandle reserved = ~hsm::ObjectHandle{0}; // below this: issued without asking
    // Makes every handle below `below` reserved, or throws (the add fails).
    std::function<void(hsm::ObjectHandle below)> reserve;
};

class ObjectTable {
public:
    struct Object {
        uid_t owner = 0;                          // the only uid that may use or unload it
        ClientId client = kNoClient;              // the process that loaded it
        std::shared_ptr<const TokenObject> token; // exactly one of token, key
        std::shared_ptr<const KeyObject> key;
    };

    // `module`: the module's number, for messages.
    ObjectTable(std::uint32_t module, const ObjectLimits& limits, HandleRange handles = {})
        : module_(module), limits_(limits), next_handle_(handles.first),
          reserved_(handles.reserved), reserve_(std::move(handles.reserve)) {}

    // A new handle for `object`. Throws Error(limit) when the module is full
    // or the owner holds its share already, naming the limit.
    hsm::ObjectHandle add(Object object);
    // Throws Error(invalid_handle) for no such object, Error(permission) for
    // another uid's object.
    const Object& find(hsm::ObjectHandle handle, uid_t caller) const;
    // Removes the object; for a token also every key loaded under it. Returns
    // what went, for the caller to destroy outside its lock.
    std::vector<Object> erase(hsm::ObjectHandle handle, uid_t caller);
    // Removes every object `client` loaded, and every key loaded under one of
    // its tokens (by whichever client of the same uid). Returns what went.
    std::vector<Object> erase_client(ClientId client);
    // Removes every object for which `match` is true, whoever loaded it, and
    // every key loaded under a token removed. Returns what went.
    std::vector<Object> erase_matching(const std::function<bool(const Object&)>& match);
    // Removes everything (handles already given out never come back).
    std::map<hsm::ObjectHandle, Object> take_all() noexcept;

    std::size_t size() const noexcept { return objects_.size(); }
    // Whether any token is loaded.
    bool holds_token() const noexcept;
    std::size_t held_by(uid_t owner) const noexcept;

private:
    // Moves the object to `dropped` and out of the table; the next one.
    std::map<hsm::ObjectHandle, Object>::iterator
    forget(std::map<hsm::ObjectHandle, Object>::iterator it, std::vector<Object>& dropped);

    const std::uint32_t module_;
    const ObjectLimits limits_;
    hsm::ObjectHandle next_handle_; // never reset: old handles never come back
    hsm::ObjectHandle reserved_;
    std::function<void(hsm::ObjectHandle)> reserve_;
    std::map<hsm::ObjectHandle, Object> objects_;
    std::map<uid_t, std::size_t> held_; // objects per owner (owners holding none are absent)
};

} // namespace preloadrun::sim
