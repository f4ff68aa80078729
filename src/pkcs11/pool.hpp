#pragma once
// A pool of HSM service connections. A connection is not thread-safe, so each
// concurrent operation leases its own; a lease goes back to the pool when it
// ends, unless the operation found the connection broken (discard()).
//
// The pool also keeps one connection that it never lends, from its first
// acquire() until it goes (C_Finalize): the service unloads what a process
// loaded (tokens loaded by C_Login, keys loaded or generated, session keys)
// once that process has no connection open, and a lent connection may be
// discarded or closed as surplus at any time. It is the first connection
// the pool opens: the service never closes as idle the oldest connection of
// a process that has loaded anything.
//
// The service closes other connections that stay idle (hsmsim serve
// --idle-timeout), so before lending an idle connection the pool checks it
// is still open, and drops it if not. It looks at the kept connection at most
// every kKeptCheckInterval while idle connections are found open, and at
// once when none is (the service stopped, or closed them all); a kept
// connection found closed (the process had loaded nothing yet, or the service
// stopped) is opened again before anything is lent.
//
// It follows the instance of the service its connections reach: a new
// connection that finds another instance than the last (the service
// restarted) starts a new epoch, in which no connection, handle or
// generation of the old one is used again (the callers re-validate what
// they hold when epoch() changes). It also notes when the service was last
// found broken, unreachable or restarted, for operations that wait for a
// restarting service.

#include "preloadrun/common/clock.hpp"
#include "preloadrun/hsm/service.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace preloadrun::pkcs11 {

class Pool {
public:
    using Connector = std::function<std::unique_ptr<hsm::Service>()>;
    using Clock = preloadrun::Clock;
    static constexpr std::size_t kMaxIdle = 16;
    static constexpr std::chrono::milliseconds kKeptCheckInterval{10};
    explicit Pool(Connector connect, std::size_t max_idle = kMaxIdle,
                  const Clock& clock = steady_clock());

    class Lease {
    public:
        Lease(Pool& pool, std::unique_ptr<hsm::Service> service)
            : pool_(&pool), service_(std::move(service)) {}
        Lease(Lease&&) noexcept = default;
        Lease& operator=(Lease&&) = delete;
        Lease(const Lease&) = delete;
        ~Lease();
        hsm::Service& operator*() const { return *service_; }
        hsm::Service* operator->() const { return service_.get(); }
        // The connection is broken: close it instead of returning it, and
        // tell the pool (Pool::disrupted()).
        void discard() noexcept;

    private:
        Pool* pool_;
        std::unique_ptr<hsm::Service> service_;
    };

    // An idle connection still open, or a new one (throws
    // Error(unavailable) when the service cannot be reached, and notes the
    // disruption). The first call of each epoch also opens the connection
    // the pool keeps, and a call that finds the service closed it opens it
    // again.
    Lease acquire();
    // A new connection, never an idle one: tells whether the service
    // restarted (epoch()) without trusting connections that may be stale.
    Lease fresh();

    // The service was found broken: idle connections are likely broken too,
    // and are closed.
    void disrupted() noexcept;
    // A module left the group (cleared, failed, not usable): an operation
    // that then finds no module to serve it waits for the modules to come
    // back as for a restarting service (Router), rather than failing.
    void module_left() noexcept { note_disruption(); }
    // Whether the service was found broken, unreachable or restarted, or a
    // module left the group, at or after `since`.
    bool disrupted_since(Clock::time_point since) const noexcept;

    // Counts the instances of the service seen (1 from the first connection on).
    const Clock& clock() const noexcept { return clock_; }

    std::uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }
    // The instance of the current epoch (empty before the first connection).
    Bytes instance() const;

private:
    // A new connection (may be called with mutex_ held).
    std::unique_ptr<hsm::Service> connect();
    void note_disruption() noexcept;
    // Records the instance a new connection found; true when it is a new one.
    bool note_instance_locked(const Bytes& instance);
    // Opens the kept connection if there is none or the service closed it;
    // the idle connections it makes surplus go to `closed`.
    void reopen_kept_locked(std::vector<std::unique_ptr<hsm::Service>>& closed);
    void give_back(std::unique_ptr<hsm::Service> service) noexcept;

    Connector connect_;
    std::size_t max_idle_;
    const Clock& clock_;
    mutable std::mutex mutex_;
    std::unique_ptr<hsm::Service> kept_; // never lent: what this process loaded stays
    Clock::time_point kept_checked_{};
    std::vector<std::unique_ptr<hsm::Service>> idle_;
    Bytes instance_;
    std::atomic<std::uint64_t> epoch_{0};
    std::atomic<Clock::duration::rep> disrupted_at_{
        Clock::time_point::min().time_since_epoch().count()};
};

} // namespace preloadrun::pkcs11
