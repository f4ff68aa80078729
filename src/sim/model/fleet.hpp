#pragma once
// The modules of the service, of whichever kind (module.hpp): their life
// cycle (clear, fail, restore, remove, add, and what a module reports of
// itself), the initialising -> usable timer, and the event stream of every
// state or generation change. The fleet alone changes a module's state, so
// that the events come in order. Thread-safe.

#include "model/fleet_store.hpp"
#include "model/module.hpp"
#include "model/world_format.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "preloadrun/hsm/types.hpp"

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace preloadrun::sim {

inline constexpr std::uint32_t kMaxModules = 128;

struct FleetOptions {
    std::uint32_t op_latency_ms = 0;    // initial latency of every module
    std::uint32_t init_delay_ms = 1000; // initialising -> usable after a clear, restore or add
    ObjectLimits objects;               // of every module
};

struct FleetEvent {
    hsm::ModuleEvent event;
    bool added = false; // a module that did not exist before (no previous state)
};

class Fleet {
public:
    using Listener = std::function<void(const FleetEvent&)>;

    // Unsubscribes when destroyed.
    class Subscription {
    public:
        Subscription() = default;
        Subscription(Subscription&& other) noexcept;
        Subscription& operator=(Subscription&& other) noexcept;
        Subscription(const Subscription&) = delete;
        Subscription& operator=(const Subscription&) = delete;
        ~Subscription();

    private:
        friend class Fleet;
        Subscription(Fleet* fleet, std::uint64_t id) : fleet_(fleet), id_(id) {}
        Fleet* fleet_ = nullptr;
        std::uint64_t id_ = 0;
    };

    // One module per module enrolled in the store, all usable, each made by
    // `make`. This start of the service is a new epoch: a new random
    // instance id, and every module that served before takes its generation
    // one up and its handles on from what the store recorded (Error when the
    // store cannot record the new ones).
    Fleet(FleetStore& store, const FleetOptions& options, ModuleFactory make);
    Fleet(const Fleet&) = delete;
    Fleet& operator=(const Fleet&) = delete;
    ~Fleet();

    // kServiceInstanceSize random bytes, for this start of the service.
    const Bytes& instance() const noexcept { return instance_; }

    std::vector<hsm::ModuleInfo> list() const;
    std::uint32_t size() const;
    // Throws Error(not_found) naming the valid range.
    Module& module(std::uint32_t number);
    hsm::ModuleInfo info(std::uint32_t number) const;

    // Admin actions. clear: from usable or initialising. fail: from usable or
    // initialising. restore: from failed or removed. remove: from any state
    // but removed. A refused transition throws Error(usage) saying why.
    hsm::ModuleInfo control(std::uint32_t number, hsm::ModuleAction action);
    // Enrols a new module (persisted in the store) with `esn` ("": a new
    // random one); it starts initialising. Throws Error(limit) past
    // kMaxModules.
    hsm::ModuleInfo add(const std::string& esn = {});
    hsm::ModuleInfo set_latency(std::uint32_t number, std::uint32_t latency_ms);
    hsm::ModuleInfo fail_next(std::uint32_t number, std::uint32_t count);

    // Unloads what `client` loaded, on every module (Module::unload_client).
    // Returns how many objects went.
    std::size_t unload_client(ClientId client);
    // Unloads what `match` selects, on every module (Module::unload_matching).
    // Returns how many objects went.
    std::size_t unload_matching(const ObjectMatch& match);

    // Registers `listener` and returns the modules as they are at that very
    // moment: no change falls between the snapshot and the first event.
    // Listeners run with the fleet locked: they must be quick and must not
    // call back into the fleet.
    std::pair<std::vector<hsm::ModuleInfo>, Subscription> subscribe(Listener listener);

private:
    struct Pending {
        std::uint32_t number;
        std::uint64_t generation;
    };

    std::unique_ptr<Module> make_module(const EnrolledModule& enrolled, hsm::ModuleState state,
                                        const ModuleCounters& counters);
    // The change `action` makes to `m`; nullopt when it changes nothing (a
    // failed module failed again, a removed one removed). Throws
    // Error(conflict) saying why when the module's state does not allow it.
    std::optional<Module::Change> act_locked(Module& m, hsm::ModuleAction action);
    // What module `number` asked for (ModuleStart::report).
    void reported(std::uint32_t number, hsm::ModuleAction action, const std::string& why);
    // Records a generation change in the world (a failure is logged).
    void save_generation(const Module::Change& change);
    Module& module_locked(std::uint32_t number) const;
    std::vector<Module*> all_modules() const;
    void emit_locked(const Module::Change& change, bool added);
    void schedule_ready_locked(const Module& module, std::uint64_t generation);
    void timer_loop();
    void unsubscribe(std::uint64_t id);

    FleetStore& store_;
    const FleetOptions options_;
    const ModuleFactory make_;
    const Bytes instance_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Module>> modules_; // module n at index n-1; never shrinks
    std::map<std::uint64_t, Listener> listeners_;
    std::uint64_t next_listener_ = 1;
    std::uint64_t sequence_ = 0;
    std::multimap<std::chrono::steady_clock::time_point, Pending> pending_;
    std::condition_variable timer_cv_;
    bool stopping_ = false;
    std::thread timer_;
};

} // namespace preloadrun::sim
