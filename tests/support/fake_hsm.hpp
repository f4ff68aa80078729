#pragma once
// A scripted HSM service for unit tests: no socket, no hsmsim, no thread of
// its own. The test is the fleet: it adds, clears, fails, restores and
// removes modules and restarts the service, and every subscribed event
// stream is told, as hsmsim tells its subscribers. Connections (FakeService)
// and event streams (FakeEventStream) are made by connect() and subscribe(),
// for the connector and subscriber seams of the code under test.
//
// What a module holds: tokens loaded on it (each load a new handle) until it
// is cleared, failed, restored or removed; a key loaded with a token's handle
// needs that handle to be current there, and unloading a handle that is not
// there is Error(invalid_handle). Signing answers the module number.
// `fail[m]` makes every operation on module m throw that code. What the
// service answers is Error(..., Origin::peer); a connection made before a
// restart fails with Error(unavailable) raised here (Origin::local).
//
// Safe to use from several threads (loads run in parallel); the fields are
// for the test's thread, between operations.

#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/service.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace testsupport {

using preloadrun::Bytes;
using preloadrun::ErrorCode;
using preloadrun::Origin;
namespace hsm = preloadrun::hsm;

class FakeEventStream;

class FakeHsm {
public:
    // Modules 1..`modules`, usable, generation 0.
    explicit FakeHsm(std::uint32_t modules = 3);
    FakeHsm(const FakeHsm&) = delete;
    FakeHsm& operator=(const FakeHsm&) = delete;
    ~FakeHsm();

    // ---- the seams ----
    // A new connection; throws Error(unavailable) while `reachable` is false.
    std::unique_ptr<hsm::Service> connect();
    // A new subscription to module events (snapshot: the modules now).
    std::unique_ptr<hsm::EventStream> subscribe();

    // ---- the fleet, as an operator drives it (each change is an event) ----
    // Enrols a module (the next number), initialising; ready() makes it usable.
    std::uint32_t add();
    // Initialising at the next generation: its objects are gone.
    void clear(std::uint32_t module);
    void fail_module(std::uint32_t module); // failed, its objects gone
    void restore(std::uint32_t module);     // initialising at the next generation
    void remove(std::uint32_t module);      // removed, its objects gone
    void ready(std::uint32_t module);       // initialising -> usable
    // The mechanisms module `module` cannot do, from now on (no event).
    void lacks(std::uint32_t module, std::vector<hsm::MechanismKind> kinds);
    // Restarts the service: a new instance, every module one generation up
    // and usable, nothing loaded; every connection and stream is closed.
    void restart();
    // Closes every event stream without a restart (a broken connection).
    void drop_streams();

    hsm::ModuleInfo module(std::uint32_t number) const;
    std::vector<hsm::ModuleInfo> modules() const;
    // Whether `handle` is a token loaded on `module` now.
    bool token_loaded(std::uint32_t module, hsm::ObjectHandle handle) const;

    // ---- scripted answers and counters ----
    std::map<std::uint32_t, ErrorCode> fail; // every operation on module m throws this,
    Origin fail_origin = Origin::peer;       // as the service's reply, or as a broken connection
    // Called at each load of a token, before it loads (may throw).
    std::function<void(std::uint32_t module, const Bytes& hash)> on_load_token;
    std::map<std::uint32_t, int> ops;   // signatures, encryptions, decryptions per module
    std::map<std::uint32_t, int> loads; // keys loaded per module
    std::map<std::uint32_t, int> token_loads;
    std::vector<std::pair<std::uint32_t, hsm::ObjectHandle>> unloaded;  // tokens, as unloaded
    std::vector<std::pair<std::uint32_t, hsm::ObjectHandle>> destroyed; // module, token handle
    std::vector<hsm::TokenInfo> tokens;
    std::vector<hsm::KeyInfo> keys;
    int open = 0;         // connections open (FakeServices alive)
    int made = 0;         // connections made so far, numbered from 0
    std::set<int> closed; // the numbers of those the service has closed
    bool reachable = true;
    Bytes instance = Bytes(hsm::kServiceInstanceSize, 1); // a new value: the service restarted

private:
    friend class FakeService;
    friend class FakeEventStream;
    struct Module {
        hsm::ModuleInfo info;
        std::set<hsm::ObjectHandle> tokens; // loaded now
    };
    Module& find(std::uint32_t number);
    const Module& find(std::uint32_t number) const;
    // Changes a module and tells the streams.
    void change(std::uint32_t number, hsm::ModuleState state, bool next_generation);
    void emit(hsm::ModuleEvent event);           // to every stream (mutex_ held)
    void maybe_fail(std::uint32_t module) const; // mutex_ held
    void usable_or_throw(std::uint32_t module) const;

    mutable std::recursive_mutex mutex_;
    std::vector<Module> modules_;
    std::vector<FakeEventStream*> streams_;
    std::uint64_t next_handle_ = 1000;
    std::uint64_t sequence_ = 0;
};

class FakeService final : public hsm::Service {
public:
    explicit FakeService(FakeHsm& hsm);
    FakeService(const FakeService&) = delete;
    FakeService& operator=(const FakeService&) = delete;
    ~FakeService() override;

    const Bytes& instance() const noexcept override { return instance_; }
    const Bytes& world_id() const noexcept override { return world_id_; }
    hsm::WorldInfo world() override;
    std::vector<hsm::ModuleInfo> modules() override;
    std::vector<hsm::TokenInfo> tokens() override;
    std::vector<hsm::KeyInfo> keys() override;
    hsm::TokenInfo create_token(hsm::TokenType, const std::string&,
                                const preloadrun::SecureBuffer&) override;
    hsm::ObjectHandle load_token(std::uint32_t module, const Bytes& hash,
                                 const preloadrun::SecureBuffer& passphrase) override;
    void change_passphrase(std::uint32_t module, const Bytes& hash,
                           const preloadrun::SecureBuffer& passphrase,
                           const preloadrun::SecureBuffer& fresh) override;
    hsm::ObjectHandle load_key(std::uint32_t module, const std::string& ident,
                               hsm::ObjectHandle token) override;
    void unload(std::uint32_t module, hsm::ObjectHandle handle) override;
    hsm::GeneratedKey generate_key(std::uint32_t module, const hsm::KeySpec& spec) override;
    void destroy_key(const std::string& ident, std::uint32_t module,
                     hsm::ObjectHandle token) override;
    Bytes sign(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism&,
               const Bytes&) override;
    void verify(std::uint32_t, hsm::ObjectHandle, const hsm::Mechanism&, const Bytes&,
                const Bytes&) override {}
    // "AES-GCM": the data, then a tag of tag_bits / 8 bytes, each the module
    // number; decrypting takes it off again (Error(crypto) when too short).
    Bytes encrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data) override;
    Bytes decrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                  const Bytes& data) override;
    Bytes random(std::uint32_t, std::uint32_t n) override { return Bytes(n); }
    // The unit tests neither wrap nor use public keys on their own: the
    // end-to-end tests do, on hsmsim.
    void verify_public(std::uint32_t, const Bytes&, const hsm::Mechanism&, const Bytes&,
                       const Bytes&) override {
        throw preloadrun::Error(preloadrun::ErrorCode::usage, "the fake HSM has no public keys");
    }
    Bytes encrypt_public(std::uint32_t, const Bytes&, const hsm::Mechanism&,
                         const Bytes&) override {
        throw preloadrun::Error(preloadrun::ErrorCode::usage, "the fake HSM has no public keys");
    }
    Bytes wrap_key(std::uint32_t, hsm::ObjectHandle, const hsm::Mechanism&,
                   hsm::ObjectHandle) override {
        throw preloadrun::Error(preloadrun::ErrorCode::usage, "the fake HSM wraps no key");
    }
    bool usable() noexcept override;
    int serial() const noexcept { return serial_; }

private:
    // Locks the fake for one request; throws Error(unavailable) once the
    // service this connection reached restarted (it would have closed it),
    // and what fail[module] says.
    std::unique_lock<std::recursive_mutex> enter(std::optional<std::uint32_t> module = {}) const;
    FakeHsm& hsm_;
    int serial_;
    Bytes instance_;
    Bytes world_id_ = Bytes(20, 0xab);
};

class FakeEventStream final : public hsm::EventStream {
public:
    FakeEventStream(FakeHsm& hsm, std::vector<hsm::ModuleInfo> snapshot, Bytes instance);
    FakeEventStream(const FakeEventStream&) = delete;
    FakeEventStream& operator=(const FakeEventStream&) = delete;
    ~FakeEventStream() override;

    const std::vector<hsm::ModuleInfo>& snapshot() const override { return snapshot_; }
    const Bytes& instance() const noexcept override { return instance_; }
    int fd() const override { return fd_; }
    // Never waits (the test pushes events before it runs the loop).
    std::optional<hsm::ModuleEvent> next(std::chrono::milliseconds timeout) override;

private:
    friend class FakeHsm;
    void push(const hsm::ModuleEvent& event); // FakeHsm::mutex_ held
    void close();                             // FakeHsm::mutex_ held
    void signal() const;                      // makes fd() readable

    FakeHsm* hsm_; // null once closed by the service
    std::vector<hsm::ModuleInfo> snapshot_;
    Bytes instance_;
    int fd_;
    std::vector<hsm::ModuleEvent> pending_;
    bool closed_ = false;
};

} // namespace testsupport
