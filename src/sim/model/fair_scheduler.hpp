#pragma once
// Takes turns on one module: one operation at a time, the next chosen by a
// FairQueue (the waiting uid that has used the least operation time; first
// come first served within a uid). An operation's time is measured on the
// injected clock from the moment it gets its turn to the moment it gives it
// back, simulated latency included. Thread-safe.

#include "model/fair_queue.hpp"
#include "preloadrun/common/clock.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <sys/types.h>

namespace preloadrun::sim {

class FairScheduler {
public:
    // Holding a Turn is serving the module; destroying it charges the time
    // it was held to its uid and hands the module to the next operation.
    class Turn {
    public:
        Turn(Turn&& other) noexcept;
        Turn& operator=(Turn&&) = delete;
        Turn(const Turn&) = delete;
        Turn& operator=(const Turn&) = delete;
        ~Turn();

    private:
        friend class FairScheduler;
        Turn(FairScheduler* scheduler, Clock::time_point start) noexcept
            : scheduler_(scheduler), start_(start) {}
        FairScheduler* scheduler_;
        Clock::time_point start_;
    };

    explicit FairScheduler(const Clock& clock = steady_clock()) : clock_(clock) {}
    FairScheduler(const FairScheduler&) = delete;
    FairScheduler& operator=(const FairScheduler&) = delete;

    // Waits until it is the turn of this operation of `uid`.
    Turn acquire(uid_t uid);

    // Operations waiting for their turn (not counting the one served).
    std::size_t waiting() const;
    FairQueue::Duration virtual_time_of(uid_t uid) const;

private:
    void release(Clock::time_point start) noexcept;
    void grant_locked();

    const Clock& clock_;
    mutable std::mutex mutex_;
    std::condition_variable turn_cv_;
    FairQueue queue_;
    std::optional<FairQueue::Ticket> granted_; // given the module, not yet woken
};

} // namespace preloadrun::sim
