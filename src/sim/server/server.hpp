#pragma once
// The socket service: the world, the fleet and the handler behind a client
// socket and an admin socket, one thread per connection. serve() (serve.cpp)
// wraps it with signals and readiness; tests drive it directly.

#include "member/members.hpp"
#include "model/destroyer.hpp"
#include "model/fleet.hpp"
#include "model/simulated_module.hpp"
#include "model/world.hpp"
#include "server/connection_shares.hpp"
#include "server/handler.hpp"
#include "server/listener.hpp"
#include "server/serve.hpp"
#include "server/served_connection.hpp"

#include <list>
#include <memory>
#include <thread>

namespace preloadrun::sim {

struct ServerTuning {
    std::uint32_t kdf_iterations = kDefaultKdfIterations; // for tokens created
    ConnectionLimits limits;                              // idle_timeout comes from ServeOptions
    // Of ServeOptions::max_connections, kept for root and the service's user.
    std::size_t reserved_connections = kReservedConnections;
    std::size_t max_admin_connections = kMaxAdminConnections;
};

class Server {
public:
    // Opens (or creates) the world, enrols up to options.modules modules,
    // binds both sockets. Throws preloadrun::Error when it cannot start.
    explicit Server(const ServeOptions& options, const ServerTuning& tuning = {});
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server();

    // Serves until `stop_fd` becomes readable and `stop()` (when given)
    // returns true; then stops accepting, ends every connection and joins
    // its thread, and removes both sockets.
    void run(int stop_fd, const std::function<bool()>& stop = {});
    // Re-reads the fleet configuration (PKCS#11 members); a simulated fleet
    // has none: logs so.
    void reload();

    // "hsmsim: ready: N modules, world <id>, socket <path>, admin socket <path>"
    std::string ready_line() const;
    // The Security World of a simulated fleet (null with PKCS#11 members).
    World* world() noexcept { return world_.get(); }
    Fleet& fleet() noexcept { return *fleet_; }
    const Clients& clients() const noexcept { return handler_->clients(); }

private:
    struct Slot {
        std::unique_ptr<ServedConnection> connection;
        std::thread thread;
        uid_t uid = 0; // counted in shares_
        bool admin = false;
    };
    void accept_from(const Listener& listener, bool admin);
    void reap(bool all);
    void start_simulated();
    void start_members();
    std::size_t live_connections() const;

    ServeOptions options_;
    ServerTuning tuning_;
    ConnectionShares shares_;
    // Simulated HSMs: the world, its modules and their fleet.
    std::unique_ptr<World> world_;
    std::unique_ptr<SimulatedModules> modules_;
    std::unique_ptr<Fleet> sim_fleet_;
    // Or PKCS#11 members.
    std::unique_ptr<member::MemberFleet> members_;
    Fleet* fleet_ = nullptr;
    Catalog* catalog_ = nullptr;
    std::unique_ptr<Destroyer> destroyer_;
    std::unique_ptr<Handler> handler_;
    std::unique_ptr<Listener> client_;
    std::unique_ptr<Listener> admin_;
    std::list<Slot> connections_;
    std::uint64_t next_connection_ = 1;
};

} // namespace preloadrun::sim
