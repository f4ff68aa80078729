#pragma once
// One connection as the service serves it (the client library's side is in
// src/hsm), by a thread of its own: Hello first, then one
// response per request, or (after Subscribe) a stream of events. A broken
// frame or message ends this connection only. It holds its client's lease
// (clients.hpp) until it ends: the client's last connection to end unloads
// what the client loaded, on this connection's thread.
//
// A connection that has sent no request for `idle_timeout` (none under way,
// no frame begun, not subscribed to events) is closed, unless it is the one
// that keeps what its process loaded (Clients::keeps_objects(): the oldest
// open connection of a process that has loaded anything). That one is
// looked at again after each further idle_timeout: once another connection
// of its process has become the keeper, or its process has gone, it goes.

#include "preloadrun/common/fd.hpp"
#include "server/handler.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

namespace preloadrun::sim {

struct ConnectionLimits {
    // A frame begun but not finished within this time drops the connection.
    std::chrono::milliseconds partial_frame_timeout{30000};
    // A connection with no request for this long is closed, unless it keeps
    // what its process loaded; zero: never.
    std::chrono::milliseconds idle_timeout{0};
    // How long one response or event may take to be written.
    std::chrono::milliseconds write_timeout{30000};
    // Events queued for one subscriber before it is dropped as too slow.
    std::size_t max_queued_events = 4096;
};

class ServedConnection {
public:
    // `lease`: from handler.attach(peer).
    ServedConnection(Fd fd, Peer peer, Clients::Lease lease, std::uint64_t id, Handler& handler,
                     ConnectionLimits limits = {});
    ServedConnection(const ServedConnection&) = delete;
    ServedConnection& operator=(const ServedConnection&) = delete;

    // The thread body. Never throws.
    void run() noexcept;
    // From another thread: makes run() return soon (the socket is shut down,
    // not closed, so the descriptor stays valid until this object goes).
    void shutdown() noexcept;
    bool done() const noexcept { return done_.load(); }
    std::uint64_t id() const noexcept { return id_; }

private:
    void serve();
    // false: close the connection.
    bool process(std::span<const std::uint8_t> payload);
    // Idle past the limit: true to close it, false when it stays (it keeps
    // what its process loaded).
    bool close_idle();
    // Sends one response, then wipes what it carried (data included).
    void send_response(wire::Response response);
    void stream_events(const wire::Request& request);

    Fd fd_;
    Peer peer_;
    Clients::Lease lease_;
    std::uint64_t id_;
    Handler& handler_;
    ConnectionLimits limits_;
    bool hello_done_ = false;
    std::atomic<bool> done_{false};
};

} // namespace preloadrun::sim
