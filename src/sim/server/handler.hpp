#pragma once
// The request handler: a pure dispatch from wire requests to the world, the
// fleet and its modules, through the table of requests (requests.hpp: who may
// send each, and its answer). Every preloadrun::Error becomes an error
// response in exactly one place (handle()); nothing here does I/O on sockets. It also
// keeps the clients (processes) connected: what a client loaded is unloaded
// from every module when its last connection closes.

#include "model/catalog.hpp"
#include "model/destroyer.hpp"
#include "model/fleet.hpp"
#include "server/clients.hpp"
#include "server/paging.hpp"
#include "server/requests.hpp"
#include "wire.pb.h"

#include <atomic>
#include <string>
#include <sys/types.h>
#include <utility>

namespace preloadrun::sim {

class Handler {
public:
    // `destroyer`: null where keys and tokens are not destroyed through the service.
    Handler(Catalog& catalog, Fleet& fleet, Destroyer* destroyer, PageLimits pages = {})
        : catalog_(catalog), fleet_(fleet), destroyer_(destroyer), pages_(pages),
          clients_([this](const Clients::Client& client) { client_gone(client); }) {}
    Handler(const Handler&) = delete;
    Handler& operator=(const Handler&) = delete;

    // A new connection of peer.uid's process peer.pid: sets peer.client. The
    // lease, when released, counts the connection out; when it was the
    // process's last, everything the process loaded on every module is
    // unloaded (and logged), on the releasing thread.
    Clients::Lease attach(Peer& peer);
    const Clients& clients() const noexcept { return clients_; }
    // The service is stopping: a process whose last connection closes from
    // now on keeps its objects until they go with the service. Unloading
    // them one process at a time would let the others' requests, still
    // under way, meet objects that vanished (keys loaded under another
    // process's tokens) instead of a service that stopped.
    void stopping() noexcept { stopping_.store(true, std::memory_order_release); }

    // Any request but Subscribe (see subscribe()). Never throws
    // preloadrun::Error: failures come back as Response{error}.
    wire::Response handle(const wire::Request& request, const Peer& peer);

    // Subscribe: registers `listener` and answers with the snapshot of every
    // module, taken atomically with the registration.
    std::pair<wire::Response, Fleet::Subscription> subscribe(const wire::Request& request,
                                                             Fleet::Listener listener);

private:
    wire::Response dispatch(const wire::Request& request, const Peer& peer);
    void client_gone(const Clients::Client& client);

    Catalog& catalog_;
    Fleet& fleet_;
    Destroyer* destroyer_;
    PageLimits pages_;
    Clients clients_;
    std::atomic<bool> stopping_{false};
};

} // namespace preloadrun::sim
