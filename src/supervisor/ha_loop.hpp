#pragma once
// The high-availability loop: keeps the tokens loaded on every usable module
// while modules are cleared, fail, come back or are enrolled, and republishes
// the tokens file after every change. Event-driven (the HSM service pushes
// module events; nothing polls), and it never blocks the event loop: loads
// and reconnections run on worker threads and post their results back.
//
// Its seams: where the events come from and where work off the loop's
// thread runs (Seams), how tokens are loaded (Loader, with its connector),
// and time (the EventLoop's clock: the retry window and every delay). The
// unit tests drive a scripted fleet through it with a fake clock, running
// that work at once.

#include "core/event_loop.hpp"
#include "fleet_state.hpp"
#include "loader.hpp"
#include "preloadrun/common/retry.hpp"
#include "preloadrun/hsm/service.hpp"

#include <functional>
#include <map>
#include <memory>

namespace preloadrun::supervisor {

class HaLoop {
public:
    struct Seams {
        // A new subscription to the module events (may throw Error).
        std::function<std::unique_ptr<hsm::EventStream>()> subscribe;
        // Runs a job off the loop's thread: a load, an unload, a
        // reconnection. The job posts its result back to the loop.
        std::function<void(std::function<void()>)> background;
    };
    // The real ones: hsm::subscribe(endpoint), and a detached thread per job.
    static Seams service_seams(hsm::Endpoint endpoint);

    // `publish` renders and writes the tokens file; called on the loop thread.
    HaLoop(EventLoop& loop, Seams seams, FleetState& fleet, std::shared_ptr<const Loader> loader,
           std::function<void()> publish, std::chrono::milliseconds retry_window);
    HaLoop(const HaLoop&) = delete;
    HaLoop& operator=(const HaLoop&) = delete;
    ~HaLoop();

    // Subscribes to module events. Modules that changed between the initial
    // load and the subscription are caught up from the subscription's snapshot.
    void start();

private:
    struct Channel; // how worker threads reach this loop, while it lives

    void subscribe_now();
    void on_stream_readable();
    void on_module(const hsm::ModuleInfo& info, bool force_reload);
    void schedule_load(std::uint32_t module);
    void on_loaded(ModuleLoad result, std::uint64_t generation, std::uint64_t epoch);
    void retry_later(std::uint32_t module, const Error& error);
    void connection_lost(const std::string& why);
    void reconnect();
    void on_reconnected(std::unique_ptr<hsm::EventStream> stream, const std::string& error);

    EventLoop& loop_;
    Seams seams_;
    FleetState& fleet_;
    std::shared_ptr<const Loader> loader_;
    std::function<void()> publish_;
    RetryWindows retries_; // of loads onto modules
    std::unique_ptr<Wakeup> wakeup_;
    std::shared_ptr<Channel> channel_;
    std::unique_ptr<hsm::EventStream> stream_;
    // module -> (epoch, generation) being loaded. The epoch counts the
    // instances of the HSM service seen (each restart is a new one).
    std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> loading_;
    std::uint64_t epoch_ = 1;
    std::map<std::uint32_t, std::uint64_t> retry_timers_;
    std::chrono::milliseconds reconnect_delay_{RetryWindows::kFirstDelay};
    bool reconnecting_ = false;
};

} // namespace preloadrun::supervisor
