#pragma once
// What preloadrun has loaded where: per module, its last known state and the
// handle of each token on it. The loader and the high-availability loop
// update it; it renders the tokens file.

#include "preloadrun/hsm/types.hpp"
#include "preloadrun/tokens/module_limit.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <vector>

namespace preloadrun::supervisor {

struct ModuleState {
    hsm::ModuleInfo info;
    std::map<std::size_t, hsm::ObjectHandle> handles; // token index -> handle
    bool loaded = false;                              // the tokens are loaded on it now
    std::uint64_t loaded_generation = 0;              // module generation the handles belong to
    std::uint64_t reloads = 0;
    std::int64_t last_reload_ms = 0; // Unix time, 0 never
    bool given_up = false;
};

class FleetState {
public:
    FleetState(Bytes world_id, std::vector<hsm::TokenInfo> tokens, bool high_availability);

    const std::vector<hsm::TokenInfo>& tokens() const noexcept { return tokens_; }
    const Bytes& world_id() const noexcept { return world_id_; }

    // The instance of the HSM service the handles belong to. Another one
    // (the service restarted) drops every handle: they mean nothing there.
    // Returns whether it changed.
    bool set_service_instance(const Bytes& instance);
    const Bytes& service_instance() const noexcept { return service_instance_; }

    // Whether `info` may be tracked (tokens::ModuleLimit). A refused module
    // is logged once, with the reason.
    bool admit(const hsm::ModuleInfo& info);
    // Drops a module's handles without a change of generation (the HSM
    // service restarted: the handles may be gone).
    void forget_handles(std::uint32_t module);
    // Updates (or adds) a module's info. A new generation or an unusable
    // state drops its handles: they died with the clear or the failure.
    void update_module(const hsm::ModuleInfo& info);
    // Records the handles loaded on `module` at the module's current generation.
    void set_loaded(std::uint32_t module, std::map<std::size_t, hsm::ObjectHandle> handles,
                    std::int64_t now_ms);
    void set_given_up(std::uint32_t module, bool given_up);

    const std::map<std::uint32_t, ModuleState>& modules() const noexcept { return modules_; }
    std::optional<hsm::ObjectHandle> handle(std::uint32_t module, std::size_t token) const;

    // The tokens file contents (generation and owner are filled by the caller
    // and the publisher).
    tokens::TokensFile render(const tokens::Owner& owner) const;

private:
    Bytes world_id_;
    Bytes service_instance_;
    std::vector<hsm::TokenInfo> tokens_;
    bool high_availability_;
    std::map<std::uint32_t, ModuleState> modules_;
    tokens::ModuleLimit limit_;
};

std::int64_t unix_time_ms();

} // namespace preloadrun::supervisor
