#pragma once
// The supervisor's single-threaded event loop: poll() over a set of
// descriptors with callbacks. Signals arrive through a signalfd, HSM events
// through the event stream's descriptor, and results of worker threads
// through a Wakeup (eventfd). No timers wake it while idle: it sleeps in poll
// until a descriptor is readable or the next deadline (if any) is due.
//
// Everything but Wakeup::post() is for the loop's thread only. Callbacks must
// not block, and must tolerate a spurious call (read non-blocking fds).

#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/fd.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace preloadrun::supervisor {

class EventLoop {
public:
    using Callback = std::function<void()>;
    using Clock = preloadrun::Clock;

    // Timers follow `clock` (tests give a fake one and run rounds with a
    // zero wait: nothing sleeps).
    explicit EventLoop(const Clock& clock = steady_clock()) : clock_(clock) {}
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Calls `on_readable` whenever `fd` is readable (or hung up / in error).
    // The fd is not owned: unwatch it before closing it (a closed fd still
    // watched is dropped silently). Watching an fd again replaces its
    // callback. Safe to call from callbacks (also for the fd being run).
    void watch(int fd, Callback on_readable);
    void unwatch(int fd);
    bool watching(int fd) const { return watched_.count(fd) != 0; }

    // Runs `fn` once at `when` (on the loop's thread). Returns an id for cancel().
    std::uint64_t at(Clock::time_point when, Callback fn);
    std::uint64_t after(Clock::duration delay, Callback fn) {
        return at(clock_.now() + delay, std::move(fn));
    }
    const Clock& clock() const noexcept { return clock_; }
    // Cancels a timer that has not run yet; unknown or spent ids are ignored.
    void cancel(std::uint64_t id);

    // One round: waits (EINTR-safe) until a descriptor is ready, the next
    // timer is due, or `max_wait` has passed (nullopt: no limit beyond the
    // timers), then runs the callbacks of the ready descriptors and the due
    // timers. Returns false when it ran nothing (timed out / interrupted).
    bool run_once(std::optional<Clock::duration> max_wait = std::nullopt);

    // Runs rounds until stop() is called from a callback. A stop() requested
    // while run() is not running makes the next run() return at once.
    void run();
    void stop() noexcept { stopped_ = true; }
    bool stopped() const noexcept { return stopped_; }

    // How long the next round may sleep: nullopt when there is no timer
    // (poll without timeout: an idle loop costs nothing).
    std::optional<Clock::duration> time_to_next_timer() const;

private:
    struct Watch {
        Callback callback;
        std::uint64_t generation;
    };
    using TimerKey = std::pair<Clock::time_point, std::uint64_t>;
    bool run_due_timers();

    const Clock& clock_;
    std::map<int, Watch> watched_;
    std::uint64_t next_generation_ = 1;
    std::map<TimerKey, Callback> timers_;
    std::unordered_map<std::uint64_t, Clock::time_point> timer_deadlines_;
    std::uint64_t next_timer_ = 1;
    bool stopped_ = false;
};

// Lets worker threads hand work to the loop's thread: post() from any
// thread; the functions run on the loop's thread, in order. Create and
// destroy it on the loop's thread, after/before the threads that post.
class Wakeup {
public:
    explicit Wakeup(EventLoop& loop);
    Wakeup(const Wakeup&) = delete;
    Wakeup& operator=(const Wakeup&) = delete;
    ~Wakeup();
    void post(EventLoop::Callback fn);

private:
    void drain();
    EventLoop& loop_;
    Fd fd_;
    std::mutex mutex_;
    std::vector<EventLoop::Callback> pending_;
};

} // namespace preloadrun::supervisor
