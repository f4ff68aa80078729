#pragma once
// One module (HSM) of the service's fleet, as the fleet, the destroyer and
// the answers to requests use it: the interface that every kind of module
// implements. The simulated HSM (simulated_module.hpp) is one kind; a module
// may as well be a device behind another process, so that every operation
//  - may take time (its turn on the module, the device's own latency) and
//    is called from the thread of the connection that asked for it;
//  - may fail with a module error: Error(module_not_usable) when the module
//    is not usable, or stops being usable before it answers (the answer is
//    lost), Error(transient) for a failure worth trying on another module;
//  - belongs to a generation: a module that is reset (cleared, restored,
//    back after a failure) starts a new generation with nothing loaded, and
//    the handles of an older one are Error(invalid_handle) from then on.
//
// State changes belong to the fleet (fleet.hpp), which decides which are
// allowed and emits the events: it calls transition(). A module that finds
// on its own that its state must change (its device went away, or answers
// again) asks the fleet through ModuleStart::report.

#include "model/object_table.hpp"
#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "preloadrun/hsm/types.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>

namespace preloadrun::sim {

// Who asks for an operation: what it loads belongs to `uid` (no other uid
// may use or unload it) and goes with `client`, the process (clients.hpp).
struct Caller {
    uid_t uid = 0;
    ClientId client = kNoClient;
};

// One object loaded on a module, as unload_matching() shows it.
struct LoadedObject {
    const hsm::TokenInfo* token = nullptr; // exactly one of token, key
    const hsm::KeyInfo* key = nullptr;
};
using ObjectMatch = std::function<bool(const LoadedObject&)>;

// What a module asks of the fleet, from a thread of its own (never from
// within a call the fleet made, nor holding a lock of its own), `why` for
// the log: fail (its device went away: nothing loaded on it can be used),
// restore (a failed module answers again, as after a reset: a new
// generation), clear (it was reset). The fleet applies it as it would the
// admin's action and emits the event, or ignores it when the module's state
// does not allow it (a removed module stays removed until the admin restores
// it).
using ModuleReport = std::function<void(hsm::ModuleAction action, const std::string& why)>;

// What the fleet gives a module it starts.
struct ModuleStart {
    std::uint32_t number = 0;
    std::string esn;
    hsm::ModuleState state = hsm::ModuleState::usable;
    std::uint64_t generation = 0; // where this start of the service takes it up
    HandleRange handles;          // where its handles start, and how it reserves more
    ObjectLimits objects;         // how many objects it holds, in all and per uid
    std::uint32_t latency_ms = 0; // what a simulated module adds to each operation
    ModuleReport report;
};

class Module {
public:
    virtual ~Module() = default;

    // ---- what it is ----
    virtual std::uint32_t number() const noexcept = 0;
    // Number, ESN, state, generation, latency, counters, objects held.
    virtual hsm::ModuleInfo info() const = 0;
    virtual hsm::ModuleState state() const = 0;
    virtual std::uint64_t generation() const = 0;

    // ---- its life cycle, driven by the fleet ----
    struct Change {
        hsm::ModuleState previous_state;
        std::uint64_t previous_generation;
        hsm::ModuleInfo now;
    };
    // Sets the state; new_generation: it was reset (its generation goes one
    // up); drop_objects: nothing it had loaded stays (handles already given
    // out never return); drained: taken out of service for maintenance
    // (with state failed: no new operation starts, but those under way
    // finish and answer). Quick: it never waits behind an operation.
    virtual Change transition(hsm::ModuleState state, bool new_generation, bool drop_objects,
                              bool drained) = 0;
    // The latency added to each operation, and how many operations from now
    // on fail transiently (0 cancels them): fault injection, for the admin.
    // A kind of module that cannot simulate them throws Error(usage).
    virtual void set_latency(std::uint32_t latency_ms) = 0;
    virtual void set_fail_next(std::uint32_t count) = 0;

    // ---- a caller's operations (see above: they take time and may fail) ----
    // Logs in to a token with its passphrase (a softcard or card set of the
    // Security World, by its hash); its handle. Error(wrong_passphrase),
    // Error(too_many_attempts), Error(not_found).
    virtual hsm::ObjectHandle load_token(const Caller& caller, const Bytes& token_hash,
                                         const SecureBuffer& passphrase) = 0;
    // A token's passphrase changes to `fresh`, once `passphrase` is checked as
    // load_token() checks it. Error(usage) where the module's kind cannot.
    virtual void change_passphrase(const Caller& caller, const Bytes& token_hash,
                                   const SecureBuffer& passphrase, const SecureBuffer& fresh) = 0;
    // Finds a persistent key (by ident) and makes it usable on this module:
    // under the caller's token `token_handle`, or 0 for a module-protected key.
    virtual hsm::ObjectHandle load_key(const Caller& caller, const std::string& ident,
                                       hsm::ObjectHandle token_handle) = 0;
    // A token goes with every key loaded under it.
    virtual void unload(const Caller& caller, hsm::ObjectHandle handle) = 0;
    virtual hsm::GeneratedKey generate_key(const Caller& caller, const hsm::KeySpec& spec) = 0;
    virtual Bytes sign(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                       const Bytes& data) = 0;
    // Error(bad_signature) when it does not verify.
    virtual void verify(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                        const Bytes& data, const Bytes& signature) = 0;
    virtual Bytes encrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                          const Bytes& data) = 0;
    virtual Bytes decrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                          const Bytes& data) = 0;
    virtual Bytes random(const Caller& caller, std::uint32_t length) = 0;
    // With a public key the caller brings (SubjectPublicKeyInfo DER, RSA or
    // EC): verify (Error(bad_signature)) or encrypt. Error(transient) where
    // the module's kind cannot (another module may).
    virtual void verify_public(const Caller& caller, const Bytes& public_key,
                               const hsm::Mechanism& mech, const Bytes& data,
                               const Bytes& signature) = 0;
    virtual Bytes encrypt_public(const Caller& caller, const Bytes& public_key,
                                 const hsm::Mechanism& mech, const Bytes& data) = 0;
    // C_WrapKey: the key under `key` (hsm::KeyInfo::extractable, else
    // Error(permission)) encrypted with the key under `wrapping_key` by
    // `mech` (hsm::is_wrap). Error(usage) where the module's kind cannot.
    virtual Bytes wrap_key(const Caller& caller, hsm::ObjectHandle wrapping_key,
                           const hsm::Mechanism& mech, hsm::ObjectHandle key) = 0;
    // Runs `body` as one operation of the caller's, given the token it
    // loaded under `token_handle` (it proved that token's passphrase): what
    // is done in that token's name (destroying it, or a key it protects).
    virtual void with_token(const Caller& caller, hsm::ObjectHandle token_handle,
                            const std::function<void(const hsm::TokenInfo& token)>& body) = 0;

    // ---- without waiting for a turn, in any state ----
    // Unloads what `client` loaded (the process has gone, nobody waits for
    // an answer); how many objects went.
    virtual std::size_t unload_client(ClientId client) = 0;
    // Unloads every object `match` selects, whoever loaded it, with the keys
    // loaded under a token that goes; how many went.
    virtual std::size_t unload_matching(const ObjectMatch& match) = 0;
    // How many objects `owner` holds on the module (its share is limited).
    virtual std::size_t held_by(uid_t owner) const = 0;
};

// How the fleet makes its modules (of whichever kind).
using ModuleFactory = std::function<std::unique_ptr<Module>(ModuleStart start)>;

} // namespace preloadrun::sim
