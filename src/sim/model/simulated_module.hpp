#pragma once
// The simulated HSM, the first kind of module (module.hpp): number, ESN,
// state, generation, counters, latency, injected failures, and its object
// table (loaded tokens and keys, with a share per uid). Its tokens and keys
// are those of the Security World (world.hpp): a token loads once its
// passphrase unwraps the token key, a key once unwrapped under it (or the
// world key).
//
// Locking: the scheduler gives the module to one operation at a time (each
// taking latency_ms), fairly between uids (fair_scheduler.hpp); state_mutex_
// guards everything else and is only ever held briefly, so state changes
// (clear, fail, ...) never wait behind a slow operation.

#include "model/crypto.hpp"
#include "model/fair_scheduler.hpp"
#include "model/module.hpp"
#include "model/object_table.hpp"
#include "model/token_unlocker.hpp"
#include "model/world.hpp"
#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

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

class SimulatedModule final : public Module {
public:
    // `world`: where its tokens and keys are; `unlocker`: the check of
    // token passphrases, shared by the modules of the service.
    SimulatedModule(ModuleStart start, World& world, TokenUnlocker& unlocker);
    SimulatedModule(const SimulatedModule&) = delete;
    SimulatedModule& operator=(const SimulatedModule&) = delete;

    // ---- Module ----
    std::uint32_t number() const noexcept override { return number_; }
    hsm::ModuleInfo info() const override;
    hsm::ModuleState state() const override;
    std::uint64_t generation() const override;
    Change transition(hsm::ModuleState state, bool new_generation, bool drop_objects,
                      bool drained) override;
    void set_latency(std::uint32_t latency_ms) override;
    void set_fail_next(std::uint32_t count) override;

    // Checks the passphrase (KDF, unwrap; rate-limited per uid and token)
    // before taking the module: only adding the token is a module operation.
    hsm::ObjectHandle load_token(const Caller& caller, const Bytes& token_hash,
                                 const SecureBuffer& passphrase) override;
    hsm::ObjectHandle load_key(const Caller& caller, const std::string& ident,
                               hsm::ObjectHandle token_handle) override;
    void unload(const Caller& caller, hsm::ObjectHandle handle) override;
    // A persistent key is stored in the world, with `caller.uid` as its creator.
    hsm::GeneratedKey generate_key(const Caller& caller, const hsm::KeySpec& spec) override;
    void change_passphrase(const Caller& caller, const Bytes& token_hash,
                           const SecureBuffer& passphrase, const SecureBuffer& fresh) override;
    Bytes sign(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
               const Bytes& data) override;
    void verify(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                const Bytes& data, const Bytes& signature) override;
    Bytes encrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data) override;
    Bytes decrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data) override;
    Bytes random(const Caller& caller, std::uint32_t length) override;
    Bytes wrap_key(const Caller& caller, hsm::ObjectHandle wrapping_key, const hsm::Mechanism& mech,
                   hsm::ObjectHandle key) override;
    void verify_public(const Caller& caller, const Bytes& public_key, const hsm::Mechanism& mech,
                       const Bytes& data, const Bytes& signature) override;
    Bytes encrypt_public(const Caller& caller, const Bytes& public_key, const hsm::Mechanism& mech,
                         const Bytes& data) override;
    void with_token(const Caller& caller, hsm::ObjectHandle token_handle,
                    const std::function<void(const hsm::TokenInfo& token)>& body) override;

    std::size_t unload_client(ClientId client) override;
    std::size_t unload_matching(const ObjectMatch& match) override;
    std::size_t held_by(uid_t owner) const override;

    // ---- the simulation ----
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

    // ---- object table (use inside operate()) ----
    // `client`: the process loading it (object_table.hpp).
    hsm::ObjectHandle add_token(uid_t owner, ClientId client, hsm::TokenInfo info,
                                SecureBuffer token_key);
    hsm::ObjectHandle add_key(uid_t owner, ClientId client, KeyObject key);
    // Throw Error(invalid_handle) for no such object (or one of the other
    // kind), Error(permission) for another uid's object.
    std::shared_ptr<const TokenObject> token(hsm::ObjectHandle handle, uid_t caller) const;
    std::shared_ptr<const KeyObject> key(hsm::ObjectHandle handle, uid_t caller) const;
    // The key a GenerateKey.unwrap_with and its value give, unwrapped.
    std::shared_ptr<const Key> unwrapped(const Caller& caller, const hsm::KeySpec& spec) const;
    // The key a GenerateKey.copy_of names, if `token` (null: the module)
    // protects it as it protects that key.
    std::shared_ptr<const KeyObject> copy_source(const Caller& caller, hsm::ObjectHandle handle,
                                                 const TokenObject* token) const;
    // Removes the object; for a token also every key loaded under it.
    // Returns how many objects went.
    std::size_t remove(hsm::ObjectHandle handle, uid_t caller);

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
    // The caller's token `token_handle`, checked to be `protector`, the one
    // that protects the key `record` (inside an operation).
    std::shared_ptr<const TokenObject> protecting_token(const KeyRecord& record,
                                                        const hsm::TokenInfo& protector,
                                                        hsm::ObjectHandle token_handle,
                                                        uid_t uid) const;

    const std::uint32_t number_;
    const std::string esn_;
    World& world_;
    TokenUnlocker& unlocker_;

    FairScheduler scheduler_;
    mutable std::mutex state_mutex_;
    hsm::ModuleState state_;
    std::uint64_t generation_ = 0;
    std::uint32_t latency_ms_;
    std::uint64_t ops_ = 0;
    std::uint64_t ops_failed_ = 0;
    std::uint32_t fail_next_ = 0;
    bool drained_ = false; // failed for maintenance: operations under way finish
    ObjectTable objects_;
};

// The simulated modules of one service: what they share (the Security World
// that holds their tokens and keys, and the check of token passphrases,
// rate-limited per uid and token whichever module a try is for), and how the
// fleet makes them. Outlives the fleet that uses factory().
class SimulatedModules {
public:
    // clock and passphrases: the rate limit of wrong passphrases.
    explicit SimulatedModules(World& world, const Clock& clock = steady_clock(),
                              const PassphrasePolicy& passphrases = {})
        : world_(world), unlocker_(world, clock, passphrases) {}
    SimulatedModules(const SimulatedModules&) = delete;
    SimulatedModules& operator=(const SimulatedModules&) = delete;

    std::unique_ptr<SimulatedModule> make(ModuleStart start) {
        return std::make_unique<SimulatedModule>(std::move(start), world_, unlocker_);
    }
    ModuleFactory factory() {
        return
            [this](ModuleStart start) -> std::unique_ptr<Module> { return make(std::move(start)); };
    }

private:
    World& world_;
    TokenUnlocker unlocker_;
};

} // namespace preloadrun::sim
