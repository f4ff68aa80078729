#pragma once
// A module of another kind than the simulated HSM, for tests of what drives
// modules through the Module interface (the fleet, the handler and its
// answers): it records what it is asked, answers from a script, fails with
// the module error a test sets, and reports changes of its own (as a device
// that goes away and comes back would) when the test says so.

#include "model/module.hpp"
#include "preloadrun/common/error.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace simtest {

class FakeModule final : public preloadrun::sim::Module {
public:
    // One call, as the fake saw it.
    struct Call {
        std::string what; // "sign", "load_token", "transition usable +gen -objects", ...
        uid_t uid = 0;
        preloadrun::sim::ClientId client = preloadrun::sim::kNoClient;
        preloadrun::hsm::ObjectHandle handle = 0;
        std::string text; // the data signed, the passphrase given, ...
    };

    explicit FakeModule(preloadrun::sim::ModuleStart start);

    // ---- for the test ----
    std::vector<Call> calls() const;
    // The next operation throws Error(code, message) (once).
    void fail_next_with(preloadrun::ErrorCode code, std::string message);
    // Asks the fleet for `action`, as the module's own finding.
    void report(preloadrun::hsm::ModuleAction action, const std::string& why);

    // ---- Module ----
    std::uint32_t number() const noexcept override { return number_; }
    preloadrun::hsm::ModuleInfo info() const override;
    preloadrun::hsm::ModuleState state() const override;
    std::uint64_t generation() const override;
    Change transition(preloadrun::hsm::ModuleState state, bool new_generation, bool drop_objects,
                      bool drained) override;
    void set_latency(std::uint32_t latency_ms) override;
    void set_fail_next(std::uint32_t count) override;
    preloadrun::hsm::ObjectHandle load_token(const preloadrun::sim::Caller& caller,
                                             const preloadrun::Bytes& token_hash,
                                             const preloadrun::SecureBuffer& passphrase) override;
    void change_passphrase(const preloadrun::sim::Caller& caller,
                           const preloadrun::Bytes& token_hash,
                           const preloadrun::SecureBuffer& passphrase,
                           const preloadrun::SecureBuffer& fresh) override;
    preloadrun::hsm::ObjectHandle load_key(const preloadrun::sim::Caller& caller,
                                           const std::string& ident,
                                           preloadrun::hsm::ObjectHandle token_handle) override;
    void unload(const preloadrun::sim::Caller& caller,
                preloadrun::hsm::ObjectHandle handle) override;
    preloadrun::hsm::GeneratedKey generate_key(const preloadrun::sim::Caller& caller,
                                               const preloadrun::hsm::KeySpec& spec) override;
    preloadrun::Bytes sign(const preloadrun::sim::Caller& caller, preloadrun::hsm::ObjectHandle key,
                           const preloadrun::hsm::Mechanism& mech,
                           const preloadrun::Bytes& data) override;
    void verify(const preloadrun::sim::Caller& caller, preloadrun::hsm::ObjectHandle key,
                const preloadrun::hsm::Mechanism& mech, const preloadrun::Bytes& data,
                const preloadrun::Bytes& signature) override;
    preloadrun::Bytes encrypt(const preloadrun::sim::Caller& caller,
                              preloadrun::hsm::ObjectHandle key,
                              const preloadrun::hsm::Mechanism& mech,
                              const preloadrun::Bytes& data) override;
    preloadrun::Bytes decrypt(const preloadrun::sim::Caller& caller,
                              preloadrun::hsm::ObjectHandle key,
                              const preloadrun::hsm::Mechanism& mech,
                              const preloadrun::Bytes& data) override;
    preloadrun::Bytes random(const preloadrun::sim::Caller& caller, std::uint32_t length) override;
    void verify_public(const preloadrun::sim::Caller& caller, const preloadrun::Bytes& public_key,
                       const preloadrun::hsm::Mechanism& mech, const preloadrun::Bytes& data,
                       const preloadrun::Bytes& signature) override;
    preloadrun::Bytes encrypt_public(const preloadrun::sim::Caller& caller,
                                     const preloadrun::Bytes& public_key,
                                     const preloadrun::hsm::Mechanism& mech,
                                     const preloadrun::Bytes& data) override;
    preloadrun::Bytes wrap_key(const preloadrun::sim::Caller& caller,
                               preloadrun::hsm::ObjectHandle wrapping_key,
                               const preloadrun::hsm::Mechanism& mech,
                               preloadrun::hsm::ObjectHandle key) override;
    void
    with_token(const preloadrun::sim::Caller& caller, preloadrun::hsm::ObjectHandle token_handle,
               const std::function<void(const preloadrun::hsm::TokenInfo& token)>& body) override;
    std::size_t unload_client(preloadrun::sim::ClientId client) override;
    std::size_t unload_matching(const preloadrun::sim::ObjectMatch& match) override;
    std::size_t held_by(uid_t owner) const override;

private:
    // Records the call; throws what fail_next_with() set, or
    // Error(module_not_usable) unless usable.
    void operation(Call call);

    const std::uint32_t number_;
    const std::string esn_;
    const preloadrun::sim::ModuleReport report_;
    mutable std::mutex mutex_;
    preloadrun::hsm::ModuleState state_;
    std::uint64_t generation_;
    preloadrun::hsm::ObjectHandle next_handle_ = 1;
    std::uint32_t objects_ = 0;
    std::optional<std::pair<preloadrun::ErrorCode, std::string>> fail_next_;
    std::vector<Call> calls_;
};

// Makes FakeModules for a fleet and keeps a pointer to each (the fleet owns them).
class FakeModules {
public:
    preloadrun::sim::ModuleFactory factory();
    // Module `number` (1-based), once the fleet made it.
    FakeModule& operator[](std::uint32_t number);

private:
    std::mutex mutex_;
    std::vector<FakeModule*> made_;
};

} // namespace simtest
