#pragma once
// Routing: each operation goes to one member of the group where its key is
// loaded, in turn (round-robin) to spread the load; a key is loaded lazily on
// a module the first time it is needed there. When the module fails under the
// operation (cleared: invalid handle; not usable; transient; connection
// lost), the operation is retried on another member before any error reaches
// the application. A module that was cleared or is not usable leaves the
// group. Session keys live on one module only and are never moved: when that
// module is lost, so is the key.
//
// A restarting HSM service: an operation that no module could serve, while
// the service is or was just now unreachable or restarted (Pool), waits for
// it, up to the service wait, calling `recover` (re-validate what this process
// holds in the new instance, pick up the reloads) and trying again; a restart
// shorter than the wait is then invisible to the application.

#include "group.hpp"
#include "objects.hpp"
#include "pool.hpp"
#include "preloadrun/common/error.hpp"
#include "slots.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace preloadrun::pkcs11 {

// What a failure says about the module it happened on: the error's retry
// class, which depends on where it was raised (error_table.def). An error the
// service reported is never taken for a broken connection: "the service said
// io" is its storage failing (final), an io error on our socket is the
// connection (drop it, try again).
enum class Fault {
    module_gone,   // cleared (invalid handle) or not usable: leaves the group
    try_elsewhere, // transient: this operation goes elsewhere, the module stays
    connection,    // the connection broke or the peer broke the protocol: drop it, try again
    final,         // about the request itself (bad data, bad signature, ...)
};
Fault classify(const Error& error) noexcept;

class Router {
public:
    Router(Pool& pool, Group& group, Slots& slots) : pool_(pool), group_(group), slots_(slots) {}

    struct Waiting {
        std::chrono::milliseconds service_wait{0}; // 0: fail at once
        // Before each operation when the pool's epoch changed, and between
        // the tries of a waiting operation. Must not throw.
        std::function<void()> recover;
        std::function<bool()> epoch_changed; // cheap: whether recover() has work
    };
    void set_waiting(Waiting waiting) { waiting_ = std::move(waiting); }
    // Calls `recover` when the pool's epoch changed.
    void recover_if_needed();

    using KeyOp = std::function<Bytes(hsm::Service&, std::uint32_t module, hsm::ObjectHandle key)>;
    using ModuleOp = std::function<Bytes(hsm::Service&, std::uint32_t module)>;

    // Runs `op` with `key` on a member module. Throws CkError(CKR_DEVICE_ERROR)
    // when no module could do it, or the Error of a final failure.
    Bytes run(KeyObject& key, const KeyOp& op);
    // As run(), on a module that can serve both `key` and `other` (when not
    // null: C_WrapKey's two keys); `op` gets both handles there.
    using PairOp = std::function<Bytes(hsm::Service&, std::uint32_t module, hsm::ObjectHandle key,
                                       hsm::ObjectHandle other)>;
    // `first`: the module to try first when it can serve.
    Bytes run_with(KeyObject& key, KeyObject* other, const PairOp& op,
                   std::optional<std::uint32_t> first = std::nullopt);
    // Runs `op` on any member (random numbers).
    Bytes run_any(const ModuleOp& op);
    // Generates a key on a member (where the slot's token is loaded, for a
    // token slot). Returns the module it lives on. A session key goes to the
    // slot's session-key home when it can.
    std::pair<std::uint32_t, hsm::GeneratedKey> generate(CK_SLOT_ID slot, hsm::KeySpec spec);

    // The module where the process's session keys of `slot` live together,
    // so that an operation on two of them (C_WrapKey) finds both on one
    // module: where the last one was made. Token keys are on every module.
    std::optional<std::uint32_t> session_home(CK_SLOT_ID slot) const;
    void set_session_home(CK_SLOT_ID slot, std::uint32_t module);
    // The handle of `slot`'s token on `module` (0 for the accelerator slot:
    // module protection); Error(transient) when it is not loaded there.
    hsm::ObjectHandle token_handle(CK_SLOT_ID slot, std::uint32_t module) const;

    // Removes the persistent key `key` of a token slot from the world, on a
    // member where the slot's token is loaded, with the token's handle there
    // (the service checks that it is the caller's and the key's token).
    void destroy(const KeyObject& key);

    // Loads `key` on `module` (with its token's handle there) and records the
    // handle. Used lazily here and eagerly by the reloader.
    hsm::ObjectHandle load(hsm::Service& service, KeyObject& key, std::uint32_t module);
    // Loads `keys` on `module` in one batch (Service::load_keys), recording
    // each handle: for each key, nullopt when loaded, else why not. Throws
    // what fails the batch as a whole (the module, the connection).
    std::vector<std::optional<Error>> load_all(hsm::Service& service,
                                               const std::vector<std::shared_ptr<KeyObject>>& keys,
                                               std::uint32_t module);

    // The members that can serve `key` now.
    std::vector<std::uint32_t> candidates(const KeyObject& key) const;

    Pool& pool() noexcept { return pool_; }

private:
    // The key's token's handle on `module` (0: module-protected); throws
    // Error(invalid_handle) when that token is not loaded there.
    hsm::ObjectHandle token_for(const KeyObject& key, std::uint32_t module) const;
    // Records what loading `key` on `module` gave: its handle, or a
    // refusal when the service has no such key.
    void loaded(KeyObject& key, std::uint32_t module, hsm::ObjectHandle handle) const;
    static void refused(KeyObject& key, std::uint32_t module, const Error& e);

    // Tries `fn` on the modules `candidates()` gives; waits for a restarting
    // service (above), unless `hopeless()` says no wait can help (nullptr:
    // never). `first`: tried first when it is a candidate (else they take
    // turns). Callables as template parameters: nothing is allocated to hold
    // them on the signing path.
    template <class Result, class Candidates, class Fn, class Hopeless = std::nullptr_t>
    Result attempt(const Candidates& candidates, const char* what, Fn&& fn,
                   const Hopeless& hopeless = nullptr,
                   std::optional<std::uint32_t> first = std::nullopt);
    template <class Result, class Fn>
    Result attempt_once(const std::vector<std::uint32_t>& candidates, const char* what, Fn& fn,
                        std::optional<std::uint32_t> first);
    void module_gone(std::uint32_t module, const Error& error);
    // Throws when `key` can be served nowhere (a lost session key, a key no
    // module holds).
    void check_servable(KeyObject& key) const;
    // `key`'s handle on `module`, loading it there first if need be.
    hsm::ObjectHandle loaded_on(hsm::Service& service, KeyObject& key, std::uint32_t module);

    Pool& pool_;
    Group& group_;
    Slots& slots_;
    Waiting waiting_;
    mutable std::mutex home_mutex_;
    std::map<CK_SLOT_ID, std::uint32_t> session_home_;
};

} // namespace preloadrun::pkcs11
