#include "fleet_state.hpp"

#include "preloadrun/common/log.hpp"

#include <chrono>

namespace preloadrun::supervisor {

namespace {

tokens::ModuleState file_state(hsm::ModuleState state) noexcept {
    switch (state) {
    case hsm::ModuleState::usable:
        return tokens::ModuleState::usable;
    case hsm::ModuleState::initialising:
        return tokens::ModuleState::initialising;
    case hsm::ModuleState::failed:
        return tokens::ModuleState::failed;
    case hsm::ModuleState::removed:
        return tokens::ModuleState::removed;
    }
    return tokens::ModuleState::failed;
}

tokens::TokenType file_type(hsm::TokenType type) noexcept {
    return type == hsm::TokenType::cardset ? tokens::TokenType::cardset
                                           : tokens::TokenType::softcard;
}

} // namespace

std::int64_t unix_time_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

FleetState::FleetState(Bytes world_id, std::vector<hsm::TokenInfo> tokens, bool high_availability)
    : world_id_(std::move(world_id)), tokens_(std::move(tokens)),
      high_availability_(high_availability) {}

bool FleetState::admit(const hsm::ModuleInfo& info) {
    const auto verdict = limit_.admit(info.number);
    if (verdict == tokens::ModuleLimit::Verdict::refused) {
        log::get("ha")->error("module {} (ESN {}) refused: at most {} modules are tracked, and "
                              "removed or failed ones still count; restart preloadrun to start "
                              "afresh",
                              info.number, info.esn, tokens::kMaxModules);
    }
    return tokens::ModuleLimit::ok(verdict);
}

bool FleetState::set_service_instance(const Bytes& instance) {
    if (instance == service_instance_) {
        return false;
    }
    service_instance_ = instance;
    for (auto& [number, m] : modules_) {
        m.handles.clear();
        m.loaded = false;
    }
    return true;
}

void FleetState::forget_handles(std::uint32_t module) {
    if (auto it = modules_.find(module); it != modules_.end()) {
        it->second.handles.clear();
        it->second.loaded = false;
    }
}

void FleetState::update_module(const hsm::ModuleInfo& info) {
    auto& m = modules_[info.number];
    bool generation_changed = m.info.number != 0 && m.info.generation != info.generation;
    m.info = info;
    if (generation_changed || info.state != hsm::ModuleState::usable) {
        m.handles.clear();
        m.loaded = false;
    }
}

void FleetState::set_loaded(std::uint32_t module, std::map<std::size_t, hsm::ObjectHandle> handles,
                            std::int64_t now_ms) {
    auto& m = modules_[module];
    m.handles = std::move(handles);
    m.loaded = true;
    m.loaded_generation = m.info.generation;
    m.reloads += 1;
    m.last_reload_ms = now_ms;
    m.given_up = false;
}

void FleetState::set_given_up(std::uint32_t module, bool given_up) {
    modules_[module].given_up = given_up;
}

std::optional<hsm::ObjectHandle> FleetState::handle(std::uint32_t module, std::size_t token) const {
    auto m = modules_.find(module);
    if (m == modules_.end()) {
        return std::nullopt;
    }
    auto h = m->second.handles.find(token);
    if (h == m->second.handles.end()) {
        return std::nullopt;
    }
    return h->second;
}

tokens::TokensFile FleetState::render(const tokens::Owner& owner) const {
    tokens::TokensFile file;
    file.owner = owner;
    file.world = to_hex(world_id_);
    file.service_instance = to_hex(service_instance_);
    file.high_availability = high_availability_;
    for (const auto& [number, m] : modules_) {
        file.modules.push_back({number, m.info.esn, file_state(m.info.state), m.info.generation,
                                m.reloads, m.last_reload_ms, m.given_up});
    }
    for (std::size_t t = 0; t < tokens_.size(); ++t) {
        tokens::Token token;
        token.type = file_type(tokens_[t].type);
        token.name = tokens_[t].name;
        token.hash = to_hex(tokens_[t].hash);
        for (const auto& [number, m] : modules_) {
            auto h = m.handles.find(t);
            if (h != m.handles.end() && m.info.state == hsm::ModuleState::usable) {
                token.loaded.push_back({number, m.info.esn, m.loaded_generation, h->second});
            }
        }
        file.tokens.push_back(std::move(token));
    }
    return file;
}

} // namespace preloadrun::supervisor
