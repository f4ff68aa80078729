#pragma once
// A PKCS#11 member, the second kind of module (model/module.hpp): a token
// behind a vendor's PKCS#11 library, which runs in a worker process of its
// own (worker_process.hpp).
//
//  - Loading a token is C_Login as user with the passphrase (the token set's
//    user PIN); the last token unloaded logs out. Wrong PINs go through the
//    service's limiter, as a simulated token's passphrases do.
//  - A key is found by CKA_ID, class and key type, and used only when its
//    public key is the catalog's (member_catalog.hpp).
//  - Operations are forwarded to the worker, each bounded by the member's
//    timeout. A token error that means it was reset or went away, a worker
//    that dies or does not answer in time: the worker is killed and the
//    member reports itself failed; its monitor thread starts a new worker
//    every probe interval until the token answers again, then reports it
//    restored (a new generation, nothing loaded). While it is up, the
//    monitor probes it at the same interval.
//  - clear drops its logins (log out); fail keeps them until restored.

#include "member/fleet_config.hpp"
#include "member/member_catalog.hpp"
#include "member/worker_process.hpp"
#include "model/module.hpp"
#include "model/passphrase_limiter.hpp"
#include "preloadrun/common/fd.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace preloadrun::sim::member {

// What the members share: the catalog, the limiter of wrong PINs and the
// key of the PIN digests, the program that runs workers.
struct MemberContext {
    MemberCatalog& catalog;
    PassphraseLimiter& limiter;
    const SecureBuffer& digest_key;
    std::string program;
};

class MemberModule final : public Module {
public:
    // `set`: the token set the member belongs to ("" for none).
    MemberModule(ModuleStart start, MemberConfig config, std::string set, MemberContext context);
    MemberModule(const MemberModule&) = delete;
    MemberModule& operator=(const MemberModule&) = delete;
    ~MemberModule() override;

    const std::string& name() const noexcept { return esn_; } // the member's name
    // Starts its monitor, which starts its worker (once the fleet holds it:
    // what the monitor reports goes to the fleet).
    void start();
    // Waits until the monitor has tried to start the worker once (it is
    // usable, or it reported itself failed); false when `deadline` passed.
    bool wait_first_try(std::chrono::steady_clock::time_point deadline);
    // A new configuration for the member (or set): its worker restarts,
    // which is a reset of the member.
    void reconfigure(MemberConfig config, std::string set);

    // ---- Module ----
    std::uint32_t number() const noexcept override { return number_; }
    hsm::ModuleInfo info() const override;
    hsm::ModuleState state() const override;
    std::uint64_t generation() const override;
    Change transition(hsm::ModuleState state, bool new_generation, bool drop_objects,
                      bool drained) override;
    void set_latency(std::uint32_t latency_ms) override;
    void set_fail_next(std::uint32_t count) override;
    hsm::ObjectHandle load_token(const Caller& caller, const Bytes& token_hash,
                                 const SecureBuffer& passphrase) override;
    hsm::ObjectHandle load_key(const Caller& caller, const std::string& ident,
                               hsm::ObjectHandle token_handle) override;
    void unload(const Caller& caller, hsm::ObjectHandle handle) override;
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

private:
    std::shared_ptr<Worker> usable_worker() const;
    // Calls the worker; a failed reply becomes an Error (and a worker whose
    // token went away is killed).
    worker::Reply call(Worker& worker, const worker::Request& request);
    worker::Reply checked(Worker& worker, worker::Reply reply);
    // Error(transient) when the member's library does not offer what `mech` needs.
    void require_mechanism(const Worker& worker, const hsm::Mechanism& mech) const;
    template <class Body>
    auto operate(bool counted, Body&& body) -> decltype(body(std::declval<Worker&>()));
    // The ident of the caller's key `key` (Error for another uid's or a token).
    std::string key_ident(const Caller& caller, hsm::ObjectHandle key) const;
    // The library's handle of key `ident` now (a library may renumber its
    // keys at each login): its public key object's, or the private key's.
    std::uint64_t device_handle(const std::string& ident, bool public_half) const;
    // Calls the worker with `op` on the caller's key `key`; a handle the
    // library no longer knows is looked up again, once.
    worker::Reply key_call(Worker& worker, const Caller& caller, hsm::ObjectHandle key,
                           bool public_half, worker::Request& request, worker::Operation& op);
    Bytes data_operation(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                         const Bytes& data, int kind);
    void login(Worker& worker, const Caller& caller, const Bytes& token_hash,
               const SecureBuffer& passphrase);
    void refresh_keys(Worker& worker);
    void refresh_keys_locked(Worker& worker); // login_mutex_ held
    // Logs in (login_mutex_ held), unless logged in already with that PIN.
    void logout_if_unused();
    PassphraseDigest digest_of(const SecureBuffer& passphrase) const;
    std::string who() const;

    // ---- the monitor thread ----
    void monitor();
    // Starts the worker. Throws when it cannot; when the token is not there
    // but its library reports slot events, `watcher` is the worker that
    // waits for them.
    void start_worker(std::shared_ptr<Worker>& watcher);
    void probe(const std::shared_ptr<Worker>& worker);
    // Waits for the fds (-1: none), the wake-up or `timeout`; the index of
    // the first readable fd, or -1.
    int wait(std::initializer_list<int> fds, std::chrono::milliseconds timeout);
    void wait_until(std::chrono::steady_clock::time_point when); // or the wake-up
    void wake();
    void report(hsm::ModuleAction action, const std::string& why);
    void report_down(const std::string& why);
    void tried();

    const std::uint32_t number_;
    const std::string esn_;
    const ModuleReport report_;
    MemberContext context_;

    mutable std::mutex mutex_; // everything below but the monitor's own
    MemberConfig config_;
    std::string set_;
    hsm::ModuleState state_;
    std::uint64_t generation_;
    std::uint64_t ops_ = 0;
    std::uint64_t ops_failed_ = 0;
    double latency_us_ = 0; // moving average of the operations' time
    bool drained_ = false;
    ObjectTable objects_;
    std::shared_ptr<Worker> worker_;
    std::vector<hsm::MechanismKind> lacks_;        // what the last worker's library does not offer
    std::map<std::string, DeviceKey> device_keys_; // by ident, from the last inventory
    bool logged_in_ = false;
    std::optional<PassphraseDigest> pin_digest_; // of the PIN that logged in
    bool logout_wanted_ = false;
    bool restart_wanted_ = false;
    bool down_ = false;            // it reported itself failed: it reports itself restored
    bool self_report_ = false;     // a report of its own is being applied
    bool failed_by_admin_ = false; // failed by the admin: not restored on its own
    bool tried_ = false;           // the monitor tried to start a worker once
    std::condition_variable tried_cv_;
    bool stopping_ = false;

    // One login, logout or inventory at a time; a token's load holds it
    // from its login to its object, so that no logout falls in between.
    std::mutex login_mutex_;
    Fd wakeup_;
    std::thread monitor_;
};

// How a fleet of members makes its modules: each start is looked up by its
// ESN, the member's name.
class MemberModules {
public:
    explicit MemberModules(MemberContext context) : context_(std::move(context)) {}
    // The configuration of the members the factory makes from now on.
    void set_config(const FleetConfig& config);
    ModuleFactory factory();

private:
    MemberContext context_;
    std::mutex mutex_;
    FleetConfig config_;
};

} // namespace preloadrun::sim::member
