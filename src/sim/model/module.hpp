#pragma once
// One simulated HSM: number, ESN, state, generation, counters, latency,
// injected failures, and its object table (loaded tokens and keys, with a
// share per uid).
//
// Locking: the scheduler gives the module to one operation at a time (each
// taking latency_ms), fairly between uids (fair_scheduler.hpp); state_mutex_
// guards everything else and is only ever held briefly, so state changes
// (clear, fail, ...) never wait behind a slow operation.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"
#include "sim/model/crypto.hpp"
#include "sim/model/fair_scheduler.hpp"
#include "sim/model/object_table.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <sys/types.h>
#include <type_traits>
#include <utility>

namespace preloadrun::sim {

// What a module operation counts as.
enum class OpKind {
    crypto,    // sign, verify, encrypt, decrypt, random, generate: counted in `ops`
    management // load, unload: only failures are counted (ops_failed)
};

class Module {
public:
    // `generation` and `handles`: where this start of the service takes the
    // module's numbers up (Fleet keeps them in the world).
    Module(std::uint32_t number, std::string esn, std::uint32_t latency_ms,
           hsm::ModuleState state = hsm::ModuleState::usable, const ObjectLimits& limits = {},
           std::uint64_t generation = 0, HandleRange handles = {});
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    std::uint32_t number() const noexcept { return number_; }
    hsm::ModuleInfo info() const;
    hsm::ModuleState state() const;
    std::uint64_t generation() const;

    // ---- state changes (the fleet drives these and emits the events) ----
    struct Change {
        hsm::ModuleState previous_state;
        std::uint64_t previous_generation;
        hsm::ModuleInfo now;
    };
    // Sets the state; bump_generation adds 1 to the generation; drop_objects
    // empties the object table (handles already given out never return).
    Change transition(hsm::ModuleState state, bool bump_generation, bool drop_objects);
    void set_latency(std::uint32_t latency_ms);
    // The next `count` operations fail transiently (0 cancels what is pending).
    void set_fail_next(std::uint32_t count);

    // ---- operations ----
    // Serves one operation of `uid`: waits for the module (one operation at
    // a time, the next from the waiting uid that has used the least
    // operation time on it), checks it is usable and consumes an injected
    // failure, runs `body`, and answers once the latency has passed since the
    // start (the latency of a real HSM includes its work), provided the
    // module is still usable then.
    template <class Body> auto operate(uid_t uid, OpKind kind, Body&& body) -> decltype(body()) {
        auto turn = scheduler_.acquire(uid);
        try {
            auto deadline = begin_operation();
            if constexpr (std::is_void_v<decltype(body())>) {
                body();
                finish_operation(deadline);
                end_operation(kind, true);
            } else {
                auto result = body();
                finish_operation(deadline);
                end_operation(kind, true);
                return result;
            }
        } catch (...) {
            end_operation(kind, false);
            throw;
        }
    }
    // Operations waiting for the module (not counting the one it serves).
    std::size_t waiting() const { return scheduler_.waiting(); }

    // ---- object table (use inside operate(), but for unload_client()) ----
    // `client`: the process loading it (object_table.hpp).
    hsm::ObjectHandle add_token(uid_t owner, ClientId client, hsm::TokenInfo info,
                                SecureBuffer token_key);
    hsm::ObjectHandle add_key(uid_t owner, ClientId client, KeyObject key);
    // Throw Error(invalid_handle) for no such object (or one of the other
    // kind), Error(permission) for another uid's object.
    std::shared_ptr<const TokenObject> token(hsm::ObjectHandle handle, uid_t caller) const;
    std::shared_ptr<const KeyObject> key(hsm::ObjectHandle handle, uid_t caller) const;
    // Removes the object; for a token also every key loaded under it.
    // Returns how many objects went.
    std::size_t unload(hsm::ObjectHandle handle, uid_t caller);
    // Removes everything `client` loaded (with the keys loaded under its
    // tokens), in any state of the module and without waiting for its turn:
    // the client has gone, there is nobody to answer. Returns how many went.
    std::size_t unload_client(ClientId client);
    // Removes every object `match` selects, whoever loaded it (with the keys
    // loaded under its tokens), in the same way: what was loaded from a
    // token or key that the world no longer has. Returns how many went.
    std::size_t unload_matching(const std::function<bool(const ObjectTable::Object&)>& match);
    // How many objects `owner` holds on the module (its share is limited).
    std::size_t held_by(uid_t owner) const;

private:
    // Checks the module and consumes an injected failure; returns when the
    // operation may answer (start + latency).
    std::chrono::steady_clock::time_point begin_operation();
    // Waits for `deadline`, then checks the module is still usable.
    void finish_operation(std::chrono::steady_clock::time_point deadline);
    void end_operation(OpKind kind, bool ok) noexcept;
    void check_usable_locked() const;
    hsm::ObjectHandle add_locked(ObjectTable::Object object);
    hsm::ModuleInfo info_locked() const;

    const std::uint32_t number_;
    const std::string esn_;

    FairScheduler scheduler_;
    mutable std::mutex state_mutex_;
    hsm::ModuleState state_;
    std::uint64_t generation_ = 0;
    std::uint32_t latency_ms_;
    std::uint64_t ops_ = 0;
    std::uint64_t ops_failed_ = 0;
    std::uint32_t fail_next_ = 0;
    ObjectTable objects_;
};

} // namespace preloadrun::sim
