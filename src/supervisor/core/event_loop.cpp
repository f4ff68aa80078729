#include "core/event_loop.hpp"

#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <ctime>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <utility>

namespace preloadrun::supervisor {

void EventLoop::watch(int fd, Callback on_readable) {
    watched_[fd] = Watch{std::move(on_readable), next_generation_++};
}

void EventLoop::unwatch(int fd) {
    watched_.erase(fd);
}

std::uint64_t EventLoop::at(Clock::time_point when, Callback fn) {
    const std::uint64_t id = next_timer_++;
    timers_.emplace(TimerKey{when, id}, std::move(fn));
    timer_deadlines_.emplace(id, when);
    return id;
}

void EventLoop::cancel(std::uint64_t id) {
    auto it = timer_deadlines_.find(id);
    if (it == timer_deadlines_.end()) {
        return;
    }
    timers_.erase(TimerKey{it->second, id});
    timer_deadlines_.erase(it);
}

std::optional<EventLoop::Clock::duration> EventLoop::time_to_next_timer() const {
    if (timers_.empty()) {
        return std::nullopt;
    }
    const auto left = timers_.begin()->first.first - clock_.now();
    return left > Clock::duration::zero() ? left : Clock::duration::zero();
}

bool EventLoop::run_once(std::optional<Clock::duration> max_wait) {
    // Snapshot of the watched fds; the generation tells, after poll, whether
    // the entry is still the one that was polled (a callback may have
    // unwatched it, or unwatched it and watched the same number again).
    std::vector<pollfd> fds;
    std::vector<std::uint64_t> generations;
    fds.reserve(watched_.size());
    generations.reserve(watched_.size());
    for (const auto& [fd, w] : watched_) {
        fds.push_back(pollfd{fd, POLLIN, 0});
        generations.push_back(w.generation);
    }

    auto wait = time_to_next_timer();
    if (max_wait && (!wait || *max_wait < *wait)) {
        wait = *max_wait < Clock::duration::zero() ? Clock::duration::zero() : *max_wait;
    }
    timespec ts{};
    timespec* timeout = nullptr;
    if (wait) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*wait).count();
        ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        timeout = &ts;
    }

    const int n = ::ppoll(fds.data(), fds.size(), timeout, nullptr);
    if (n < 0 && errno != EINTR) {
        throw_errno("poll");
    }
    bool ran = false;
    if (n > 0) {
        for (std::size_t i = 0; i < fds.size(); ++i) {
            if (fds[i].revents == 0) {
                continue;
            }
            auto it = watched_.find(fds[i].fd);
            if (it == watched_.end() || it->second.generation != generations[i]) {
                continue;
            }
            if ((fds[i].revents & POLLNVAL) != 0) {
                // Closed without unwatch(): drop it rather than spin on it.
                watched_.erase(it);
                continue;
            }
            // A copy: the callback may unwatch (destroy) its own entry.
            Callback callback = it->second.callback;
            callback();
            ran = true;
        }
    }
    const bool timers_ran = run_due_timers();
    return ran || timers_ran;
}

bool EventLoop::run_due_timers() {
    // Only timers that existed when the round began: a callback that re-arms
    // itself for "now" runs in the next round, not in an endless loop here.
    const std::uint64_t limit = next_timer_;
    const auto now = clock_.now();
    bool ran = false;
    for (auto it = timers_.begin(); it != timers_.end() && it->first.first <= now;) {
        if (it->first.second >= limit) {
            ++it;
            continue;
        }
        Callback fn = std::move(it->second);
        timer_deadlines_.erase(it->first.second);
        timers_.erase(it);
        fn();
        ran = true;
        it = timers_.begin(); // the callback may have changed the map
    }
    return ran;
}

void EventLoop::run() {
    while (!stopped_) {
        run_once();
    }
    stopped_ = false;
}

Wakeup::Wakeup(EventLoop& loop) : loop_(loop), fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!fd_) {
        throw_errno("eventfd");
    }
    loop_.watch(fd_.get(), [this] { drain(); });
}

Wakeup::~Wakeup() {
    loop_.unwatch(fd_.get());
}

void Wakeup::post(EventLoop::Callback fn) {
    {
        std::lock_guard lock(mutex_);
        pending_.push_back(std::move(fn));
    }
    const std::uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the loop will wake anyway.
    [[maybe_unused]] const auto written = ::write(fd_.get(), &one, sizeof one);
}

void Wakeup::drain() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto got = ::read(fd_.get(), &count, sizeof count);
    std::vector<EventLoop::Callback> work;
    {
        std::lock_guard lock(mutex_);
        work.swap(pending_);
    }
    for (auto& fn : work) {
        fn();
    }
}

} // namespace preloadrun::supervisor
