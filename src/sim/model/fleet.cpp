#include "model/fleet.hpp"

#include "model/keywrap.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

namespace preloadrun::sim {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.fleet");
}

std::string_view action_name(hsm::ModuleAction action) {
    switch (action) {
    case hsm::ModuleAction::clear:
        return "clear";
    case hsm::ModuleAction::fail:
        return "fail";
    case hsm::ModuleAction::restore:
        return "restore";
    case hsm::ModuleAction::remove:
        return "remove";
    case hsm::ModuleAction::drain:
        return "drain";
    case hsm::ModuleAction::undrain:
        return "undrain";
    }
    return "?";
}

} // namespace

Fleet::Subscription::Subscription(Subscription&& other) noexcept
    : fleet_(std::exchange(other.fleet_, nullptr)), id_(std::exchange(other.id_, 0)) {}

Fleet::Subscription& Fleet::Subscription::operator=(Subscription&& other) noexcept {
    if (this != &other) {
        if (fleet_ != nullptr) {
            fleet_->unsubscribe(id_);
        }
        fleet_ = std::exchange(other.fleet_, nullptr);
        id_ = std::exchange(other.id_, 0);
    }
    return *this;
}

Fleet::Subscription::~Subscription() {
    if (fleet_ != nullptr) {
        fleet_->unsubscribe(id_);
    }
}

Fleet::Fleet(FleetStore& store, const FleetOptions& options, ModuleFactory make)
    : store_(store), options_(options), make_(std::move(make)),
      instance_(random_bytes(hsm::kServiceInstanceSize)) {
    // What this start takes up, written before any of it is used: a module
    // that served before starts one generation up (its objects are gone, as
    // after a clear) and issues handles from where it stopped.
    std::vector<ModuleCounters> starts;
    for (const auto& enrolled : store_.modules()) {
        auto counters = store_.counters(enrolled.number);
        ModuleCounters start{enrolled.number, 0, 1};
        if (counters) {
            start.generation = counters->generation + 1;
            start.handles = counters->handles;
        }
        if (start.generation >= kMaxCounter || start.handles >= kMaxCounter - kHandleBlock) {
            throw Error(ErrorCode::corrupt, "module " + std::to_string(enrolled.number) +
                                                " has used up its generations or handles (" +
                                                store_.where() + ")");
        }
        starts.push_back(start);
    }
    auto reserved = starts;
    for (auto& c : reserved) {
        c.handles += kHandleBlock;
    }
    store_.save_counters(reserved);
    const auto enrolled = store_.modules();
    for (std::size_t i = 0; i < enrolled.size(); ++i) {
        modules_.push_back(make_module(enrolled[i], hsm::ModuleState::usable, starts[i]));
    }
    timer_ = std::thread([this] { timer_loop(); });
}

std::unique_ptr<Module> Fleet::make_module(const EnrolledModule& enrolled, hsm::ModuleState state,
                                           const ModuleCounters& counters) {
    ModuleStart start;
    start.number = enrolled.number;
    start.esn = enrolled.esn;
    start.state = state;
    start.generation = counters.generation;
    start.handles.first = counters.handles;
    start.handles.reserved = counters.handles + kHandleBlock;
    start.handles.reserve = [this, number = enrolled.number](hsm::ObjectHandle below) {
        store_.reserve_handles(number, below);
    };
    start.objects = options_.objects;
    start.latency_ms = options_.op_latency_ms;
    start.report = [this, number = enrolled.number](hsm::ModuleAction action,
                                                    const std::string& why) {
        reported(number, action, why);
    };
    return make_(std::move(start));
}

void Fleet::save_generation(const Module::Change& change) {
    if (change.now.generation == change.previous_generation) {
        return;
    }
    try {
        store_.save_generation(change.now.number, change.now.generation);
    } catch (const std::exception& e) {
        // The module changed already; a restart may show an older generation,
        // which the new instance id tells apart anyway.
        logger()->error("module {}: generation {} not recorded in {}: {}", change.now.number,
                        change.now.generation, store_.where(), e.what());
    }
}

Fleet::~Fleet() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true; // what a module reports from now on is ignored
    }
    timer_cv_.notify_all();
    timer_.join();
    // The modules go first, outside the lock: one may be reporting from a
    // thread of its own until it is destroyed.
    std::vector<std::unique_ptr<Module>> modules;
    {
        std::lock_guard lock(mutex_);
        modules.swap(modules_);
    }
}

std::vector<hsm::ModuleInfo> Fleet::list() const {
    std::lock_guard lock(mutex_);
    std::vector<hsm::ModuleInfo> out;
    out.reserve(modules_.size());
    for (const auto& m : modules_) {
        out.push_back(m->info());
    }
    return out;
}

std::uint32_t Fleet::size() const {
    std::lock_guard lock(mutex_);
    return static_cast<std::uint32_t>(modules_.size());
}

Module& Fleet::module_locked(std::uint32_t number) const {
    if (number == 0 || number > modules_.size()) {
        throw Error(ErrorCode::not_found,
                    "no module " + std::to_string(number) +
                        (modules_.empty()
                             ? std::string(" (no module is enrolled)")
                             : " (modules are 1.." + std::to_string(modules_.size()) + ")"));
    }
    return *modules_[number - 1];
}

Module& Fleet::module(std::uint32_t number) {
    std::lock_guard lock(mutex_);
    return module_locked(number);
}

hsm::ModuleInfo Fleet::info(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    return module_locked(number).info();
}

void Fleet::emit_locked(const Module::Change& change, bool added) {
    const auto& now = change.now;
    if (!added && now.state == change.previous_state &&
        now.generation == change.previous_generation) {
        return;
    }
    if (added) {
        logger()->info("module {} (ESN {}) enrolled: {}", now.number, now.esn,
                       hsm::to_string(now.state));
    } else {
        logger()->info("module {}: {} -> {}, generation {}", now.number,
                       hsm::to_string(change.previous_state), hsm::to_string(now.state),
                       now.generation);
    }
    FleetEvent event;
    event.event.sequence = ++sequence_;
    event.event.module = now;
    event.event.previous_state = change.previous_state;
    event.event.previous_generation = change.previous_generation;
    event.added = added;
    for (const auto& [id, listener] : listeners_) {
        listener(event);
    }
}

void Fleet::schedule_ready_locked(const Module& module, std::uint64_t generation) {
    auto when =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.init_delay_ms);
    pending_.emplace(when, Pending{module.number(), generation});
    timer_cv_.notify_all();
}

std::optional<Module::Change> Fleet::act_locked(Module& m, hsm::ModuleAction action) {
    using hsm::ModuleState;
    const auto state = m.state();
    auto refuse = [&](const std::string& why) {
        throw Error(ErrorCode::conflict, "cannot " + std::string(action_name(action)) + " module " +
                                             std::to_string(m.number()) + ": it is " +
                                             std::string(hsm::to_string(state)) + "; " + why);
    };
    Module::Change change{};
    switch (action) {
    case hsm::ModuleAction::clear:
        if (state == ModuleState::failed || state == ModuleState::removed) {
            refuse("restore it first");
        }
        change = m.transition(ModuleState::initialising, true, true, false);
        schedule_ready_locked(m, change.now.generation);
        break;
    case hsm::ModuleAction::fail:
        if (state == ModuleState::failed) {
            return std::nullopt; // already failed: nothing changes
        }
        if (state == ModuleState::removed) {
            refuse("a removed module cannot fail");
        }
        change = m.transition(ModuleState::failed, false, true, false);
        break;
    case hsm::ModuleAction::restore:
        if (state != ModuleState::failed && state != ModuleState::removed) {
            refuse("only a failed or removed module can be restored");
        }
        change = m.transition(ModuleState::initialising, true, true, false);
        schedule_ready_locked(m, change.now.generation);
        break;
    case hsm::ModuleAction::remove:
        if (state == ModuleState::removed) {
            return std::nullopt;
        }
        change = m.transition(ModuleState::removed, false, true, false);
        break;
    case hsm::ModuleAction::drain:
        if (state != ModuleState::usable && state != ModuleState::initialising) {
            refuse("only a usable or initialising module can be drained");
        }
        // Its objects stay for the operations under way; they go when it
        // is undrained (a new generation).
        change = m.transition(ModuleState::failed, false, false, true);
        break;
    case hsm::ModuleAction::undrain:
        if (!m.info().drained) {
            refuse("only a drained module can be undrained");
        }
        change = m.transition(ModuleState::initialising, true, true, false);
        schedule_ready_locked(m, change.now.generation);
        break;
    }
    return change;
}

hsm::ModuleInfo Fleet::control(std::uint32_t number, hsm::ModuleAction action) {
    std::lock_guard lock(mutex_);
    Module& m = module_locked(number);
    const auto change = act_locked(m, action);
    if (!change) {
        return m.info();
    }
    save_generation(*change);
    emit_locked(*change, false);
    return change->now;
}

void Fleet::reported(std::uint32_t number, hsm::ModuleAction action, const std::string& why) {
    std::lock_guard lock(mutex_);
    if (stopping_ || number == 0 || number > modules_.size()) {
        return; // the fleet is going, or the module is not in it yet
    }
    Module& m = *modules_[number - 1];
    // A module that was removed stays removed until an admin restores it.
    if (action == hsm::ModuleAction::restore && m.state() == hsm::ModuleState::removed) {
        logger()->info("module {}: {}; it stays removed", number, why);
        return;
    }
    logger()->log(action == hsm::ModuleAction::fail ? spdlog::level::warn : spdlog::level::info,
                  "module {}: {}", number, why);
    try {
        if (const auto change = act_locked(m, action)) {
            save_generation(*change);
            emit_locked(*change, false);
        }
    } catch (const Error& e) {
        logger()->info("module {}: {}", number, e.what());
    }
}

hsm::ModuleInfo Fleet::add(const std::string& esn) {
    std::lock_guard lock(mutex_);
    if (modules_.size() >= kMaxModules) {
        throw Error(ErrorCode::limit,
                    "cannot enrol another module: " + std::to_string(kMaxModules) +
                        " modules is the most hsmsim simulates");
    }
    auto enrolled = store_.enrol_module(esn);
    const ModuleCounters start{enrolled.number, 0, 1};
    store_.save_counters({{enrolled.number, 0, start.handles + kHandleBlock}});
    modules_.push_back(make_module(enrolled, hsm::ModuleState::initialising, start));
    Module& m = *modules_.back();
    auto now = m.info();
    emit_locked(Module::Change{now.state, now.generation, now}, true);
    schedule_ready_locked(m, now.generation);
    return now;
}

hsm::ModuleInfo Fleet::set_latency(std::uint32_t number, std::uint32_t latency_ms) {
    std::lock_guard lock(mutex_);
    Module& m = module_locked(number);
    m.set_latency(latency_ms);
    logger()->info("module {}: latency {} ms", number, latency_ms);
    return m.info();
}

hsm::ModuleInfo Fleet::fail_next(std::uint32_t number, std::uint32_t count) {
    std::lock_guard lock(mutex_);
    Module& m = module_locked(number);
    m.set_fail_next(count);
    logger()->info("module {}: the next {} operations will fail", number, m.info().fail_next);
    return m.info();
}

std::size_t Fleet::unload_client(ClientId client) {
    std::size_t unloaded = 0;
    for (auto* m : all_modules()) {
        unloaded += m->unload_client(client);
    }
    return unloaded;
}

std::size_t Fleet::unload_matching(const ObjectMatch& match) {
    std::size_t unloaded = 0;
    for (auto* m : all_modules()) {
        unloaded += m->unload_matching(match);
    }
    return unloaded;
}

std::vector<Module*> Fleet::all_modules() const {
    // They never go: the caller may use them without the fleet's lock.
    std::lock_guard lock(mutex_);
    std::vector<Module*> modules;
    for (const auto& m : modules_) {
        modules.push_back(m.get());
    }
    return modules;
}

std::pair<std::vector<hsm::ModuleInfo>, Fleet::Subscription> Fleet::subscribe(Listener listener) {
    std::lock_guard lock(mutex_);
    std::vector<hsm::ModuleInfo> snapshot;
    for (const auto& m : modules_) {
        snapshot.push_back(m->info());
    }
    auto id = next_listener_++;
    listeners_.emplace(id, std::move(listener));
    return {std::move(snapshot), Subscription(this, id)};
}

void Fleet::unsubscribe(std::uint64_t id) {
    Listener dropped; // destroyed outside the lock
    std::lock_guard lock(mutex_);
    auto it = listeners_.find(id);
    if (it != listeners_.end()) {
        dropped = std::move(it->second);
        listeners_.erase(it);
    }
}

void Fleet::timer_loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (pending_.empty()) {
            timer_cv_.wait(lock);
            continue;
        }
        auto due = pending_.begin()->first;
        if (std::chrono::steady_clock::now() < due) {
            timer_cv_.wait_until(lock, due);
            continue;
        }
        auto [number, generation] = pending_.begin()->second;
        pending_.erase(pending_.begin());
        Module& m = *modules_[number - 1];
        // Only if nothing happened to the module since it was scheduled.
        if (m.state() == hsm::ModuleState::initialising && m.generation() == generation) {
            emit_locked(m.transition(hsm::ModuleState::usable, false, false, false), false);
        }
    }
}

} // namespace preloadrun::sim
