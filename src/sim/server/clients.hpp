#pragma once
// The client processes of the service, as an HSM service sees them: a
// process (its pid, from the socket's peer credentials) is a client from its
// first connection to the last one it closes. Each connection holds a Lease;
// when the last lease of a process goes, `gone` is called to unload what
// that client loaded. Connections are counted, not pids checked for life: a
// forked child sharing its parent's connection keeps the client until that
// connection closes too. A process that connects again afterwards is a new
// client (a new ClientId), so nothing it loads then can be taken for what
// went. Peers whose pid the service cannot see (pid 0: a process outside
// the service's pid namespace) count as one client.
//
// The oldest connection still open of a client that has loaded anything
// keeps what it loaded: the service never closes it as idle (see
// keeps_objects()). preloadrun and the PKCS#11 module open the connection
// they keep for that purpose before any other. Thread-safe.

#include "model/object_table.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sys/types.h>

namespace preloadrun::sim {

class Clients {
public:
    struct Client {
        ClientId id = kNoClient;
        uid_t uid = 0; // of its first connection
        pid_t pid = 0;
    };
    // Called on the thread that closed the last connection, with no lock of
    // this class held; must not throw.
    using Gone = std::function<void(const Client&)>;

    explicit Clients(Gone gone) : gone_(std::move(gone)) {}
    Clients(const Clients&) = delete;
    Clients& operator=(const Clients&) = delete;

    // One connection of a client; counted out when released or destroyed.
    class Lease {
    public:
        Lease() = default;
        Lease(Lease&& other) noexcept;
        Lease& operator=(Lease&& other) noexcept;
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        ~Lease() { release(); }

        ClientId client() const noexcept { return client_; }
        void release() noexcept;

    private:
        friend class Clients;
        Lease(Clients* clients, pid_t pid, ClientId client, std::uint64_t serial)
            : clients_(clients), pid_(pid), client_(client), serial_(serial) {}
        Clients* clients_ = nullptr;
        pid_t pid_ = 0;
        ClientId client_ = kNoClient;
        std::uint64_t serial_ = 0; // the connection's place in the order they opened
    };

    // One more connection of process `pid` (running as `uid`).
    Lease connect(uid_t uid, pid_t pid);

    // Client `client` (process `pid`) has loaded or generated an object. It
    // stays marked for as long as it is a client, also once what it loaded
    // is gone (unloaded, or the module cleared): it may load again.
    void note_loaded(pid_t pid, ClientId client);
    // Whether `lease` is the connection that keeps what its client loaded:
    // the oldest connection open of a client that has loaded anything. The
    // service never closes that one as idle.
    bool keeps_objects(const Lease& lease) const;

    // How many connections process `pid` has open (0: it is no client).
    std::size_t connections(pid_t pid) const;
    // How many processes are clients now.
    std::size_t size() const;

private:
    struct Entry {
        Client client;
        std::set<std::uint64_t> open; // the serials of its connections, oldest first
        bool loaded = false;          // it has loaded or generated an object
    };
    void disconnect(pid_t pid, ClientId client, std::uint64_t serial) noexcept;

    const Gone gone_;
    mutable std::mutex mutex_;
    std::map<pid_t, Entry> clients_;
    ClientId next_ = 1;
    std::uint64_t next_serial_ = 1;
};

} // namespace preloadrun::sim
