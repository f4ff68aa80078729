#pragma once
// The high-availability loop: keeps the tokens loaded on every usable module
// while modules are cleared, fail, come back or are enrolled, and republishes
// the tokens file after every change. Event-driven (the HSM service pushes
// module events; nothing polls), and it never blocks the event loop: loads
// and reconnections run on worker threads and post their results back.

#include "preloadrun/common/retry.hpp"
#include "preloadrun/hsm/service.hpp"
#include "supervisor/event_loop.hpp"
#include "supervisor/fleet_state.hpp"
#include "supervisor/loader.hpp"

#include <functional>
#include <map>
#include <memory>

namespace preloadrun::supervisor {

class HaLoop {
public:
    // `publish` renders and writes the tokens file; called on the loop thread.
    HaLoop(EventLoop& loop, hsm::Endpoint endpoint, FleetState& fleet,
           std::shared_ptr<const Loader> loader, std::function<void()> publish,
           std::chrono::milliseconds retry_window);
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
    hsm::Endpoint endpoint_;
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
