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
// is still open, and drops it if not; a kept connection found closed (the
// process had loaded nothing yet) is opened again before anything is lent.

#include "preloadrun/hsm/service.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace preloadrun::pkcs11 {

class Pool {
public:
    using Connector = std::function<std::unique_ptr<hsm::Service>()>;
    explicit Pool(Connector connect, std::size_t max_idle = 16);

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
        // The connection is broken: close it instead of returning it.
        void discard() noexcept { service_.reset(); }

    private:
        Pool* pool_;
        std::unique_ptr<hsm::Service> service_;
    };

    // An idle connection still open, or a new one (throws
    // Error(unavailable) when the service cannot be reached). The first call
    // also opens the connection the pool keeps, and any call opens it again
    // if the service has closed it.
    Lease acquire();

private:
    void give_back(std::unique_ptr<hsm::Service> service) noexcept;

    Connector connect_;
    std::size_t max_idle_;
    std::mutex mutex_;
    std::unique_ptr<hsm::Service> kept_; // never lent: what this process loaded stays
    std::vector<std::unique_ptr<hsm::Service>> idle_;
};

} // namespace preloadrun::pkcs11
