#pragma once
// hsmsim's service entry point, called by `hsmsim serve`.

#include "model/object_table.hpp"
#include "model/world_usage.hpp"
#include "server/connection_shares.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>

namespace preloadrun::sim {

inline constexpr std::chrono::seconds kDefaultIdleTimeout{300};
inline constexpr std::chrono::seconds kMaxIdleTimeout{86400};
inline constexpr const char* kIdleTimeoutOption = "--idle-timeout";

struct ServeOptions {
    std::filesystem::path kmdata;       // Security World directory (created if empty)
    std::filesystem::path socket;       // client socket, mode 0660
    std::filesystem::path admin_socket; // admin socket, mode 0600
    std::uint32_t modules = 1;          // modules enrolled at least (first start enrols this many)
    std::uint32_t op_latency_ms = 0;    // initial per-operation latency of every module
    std::uint32_t init_delay_ms = 1000; // time a module stays initialising after clear/restore/add
    WorldLimits world_limits;           // keys and tokens per creating uid, bytes of the world
    // Objects (tokens, keys) one uid may hold on one module: 1..kMaxObjectsPerModule.
    std::uint32_t max_objects_per_uid = kDefaultMaxObjectsPerUid;
    // Connections the client socket serves at once (16 of them kept for root
    // and the service's user), and how many of them one other uid may hold.
    std::uint32_t max_connections = kDefaultMaxConnections;
    std::uint32_t max_connections_per_uid = kDefaultMaxConnectionsPerUid;
    // A connection idle this long is closed, unless it keeps what its process
    // loaded (served_connection.hpp); zero: never.
    std::chrono::milliseconds idle_timeout = kDefaultIdleTimeout;
    // Not empty: the modules are the PKCS#11 members of this fleet
    // configuration (man 5 preloadrun-fleet), not simulated HSMs; kmdata, modules
    // and op_latency_ms are not used.
    std::filesystem::path fleet_config;
    bool simulate = false; // --simulate (hsmfleet serve needs it or --fleet)
    // The program that runs a member's worker (this program, which runs
    // member::run_worker() when given member::kWorkerCommand).
    std::string worker_program;
    // The name the program was run under (hsmfleet, or its alias hsmsim):
    // the ready line starts with it.
    std::string program_name = "hsmfleet";
};

// Runs the service in the foreground until SIGTERM or SIGINT; SIGHUP re-reads
// the fleet configuration (with PKCS#11 members). Prints one "ready" line on
// stdout and notifies systemd (NOTIFY_SOCKET) once both sockets listen. Returns the process exit
// status (0 after a clean stop). Throws preloadrun::Error for a failure to start (bad world, socket
// in use).
int serve(const ServeOptions& options);

} // namespace preloadrun::sim
