#pragma once
// Loading the tokens onto modules, in parallel across modules, each module
// on its own connection to the HSM service; and unloading them again.

#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/service.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

namespace preloadrun::supervisor {

// What loading every token onto one module gave.
struct ModuleLoad {
    std::uint32_t module = 0;
    std::map<std::size_t, hsm::ObjectHandle> handles; // token index -> handle, all or none
    std::optional<Error> error;                       // why not, when it failed
    std::optional<std::size_t> failed_token;          // which token failed
    // The instance of the service the handles belong to; empty when there
    // was nothing to load (no token: no connection was made).
    Bytes instance;
    std::chrono::milliseconds took{0};
    // Whether what was loaded (if anything) is of the service `instance`.
    bool of_service(const Bytes& service_instance) const {
        return instance.empty() ? handles.empty() : instance == service_instance;
    }
};

class Loader {
public:
    // A new connection to the HSM service (hsm::connect(endpoint); a fake
    // service in tests). Called from several threads at once.
    using Connector = std::function<std::unique_ptr<hsm::Service>()>;

    // Keeps its own copies: loads run on worker threads that may outlive the
    // caller's scope. `clock` times the loads (for the log).
    Loader(Connector connect, std::vector<hsm::TokenInfo> tokens,
           std::vector<SecureBuffer> passphrases, const Clock& clock = steady_clock());

    // Loads every token onto `module`; on any failure unloads what it loaded
    // there and reports the error. Never throws. Safe to call from several
    // threads at once (each call opens its own connection).
    ModuleLoad load_module(std::uint32_t module) const;

    // load_module() on every module in parallel. `progress(done, total)` is
    // called on this thread while it waits (at most every 100 ms).
    std::vector<ModuleLoad>
    load_modules(const std::vector<std::uint32_t>& modules,
                 const std::function<void(std::size_t, std::size_t)>& progress = {}) const;

    // Wipes the passphrases: with --no-ha nothing is loaded after the first
    // load, and they are not kept a moment longer. A load_module() after this
    // fails with Error(internal). Call it when no load runs.
    void forget_passphrases() noexcept;

    // Best effort: unloads each handle, ignoring modules that were cleared;
    // modules in parallel, each on its own connection.
    void unload(const std::map<std::uint32_t, std::map<std::size_t, hsm::ObjectHandle>>& loaded)
        const noexcept;

private:
    void unload_module(std::uint32_t module,
                       const std::map<std::size_t, hsm::ObjectHandle>& handles) const noexcept;
    Connector connect_;
    std::vector<hsm::TokenInfo> tokens_;
    std::vector<SecureBuffer> passphrases_;
    const Clock& clock_;
};

} // namespace preloadrun::supervisor
