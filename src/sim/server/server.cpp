#include "server/server.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "server/own_directory.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"

#include <array>
#include <cerrno>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.service");
}

// Answers a connection we will not serve with one error, then drops it.
void refuse(int fd, const Error& error) {
    try {
        wire::ServerMessage message;
        *message.mutable_response() = hsm::codec::error_response(0, error);
        hsm::write_frame(fd, hsm::codec::encode(message),
                         std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
    } catch (const Error&) {
        // It is being refused anyway.
    }
}

} // namespace

namespace {

ConnectionShareLimits share_limits(const ServeOptions& options, const ServerTuning& tuning) {
    ConnectionShareLimits limits;
    limits.max_connections = options.max_connections;
    limits.per_uid = options.max_connections_per_uid;
    limits.reserved = tuning.reserved_connections;
    limits.max_admin = tuning.max_admin_connections;
    limits.program = options.program_name;
    return limits;
}

} // namespace

Server::Server(const ServeOptions& options, const ServerTuning& tuning)
    : options_(options), tuning_(tuning), shares_(share_limits(options, tuning), ::geteuid()) {
    if (options_.modules > kMaxModules) {
        throw Error(ErrorCode::usage, "at most " + std::to_string(kMaxModules) + " modules");
    }
    if (options_.socket.empty() || options_.admin_socket.empty()) {
        throw Error(ErrorCode::usage, "both a client socket and an admin socket path are needed");
    }
    if (options_.socket == options_.admin_socket) {
        throw Error(ErrorCode::usage, "the client socket and the admin socket must differ");
    }
    if (options_.max_objects_per_uid == 0 || options_.max_objects_per_uid > kMaxObjectsPerModule) {
        throw Error(ErrorCode::usage,
                    "--max-objects-per-uid must be 1 to " + std::to_string(kMaxObjectsPerModule));
    }
    if (options_.idle_timeout.count() < 0 || options_.idle_timeout > kMaxIdleTimeout) {
        throw Error(ErrorCode::usage, std::string(kIdleTimeoutOption) + " must be 0 to " +
                                          std::to_string(kMaxIdleTimeout.count()) + " seconds");
    }
    tuning_.limits.idle_timeout = options_.idle_timeout;
    // Before anything is written: no file is left in another user's directory.
    const auto user = ::geteuid();
    if (options_.fleet_config.empty()) {
        require_own_directory(options_.kmdata, user, "the Security World directory",
                              "NFAST_KMDATA or --kmdata");
    }
    require_own_directory(options_.socket.parent_path(), user, "the client socket's directory",
                          "HSMFLEET_SOCKET or --socket");
    require_own_directory(options_.admin_socket.parent_path(), user, "the admin socket's directory",
                          "HSMFLEET_ADMIN_SOCKET or --admin-socket");
    if (options_.fleet_config.empty()) {
        start_simulated();
    } else {
        start_members();
    }
    handler_ = std::make_unique<Handler>(*catalog_, *fleet_, destroyer_.get());
    admin_ = std::make_unique<Listener>(options_.admin_socket, 0600, 0700);
    client_ = std::make_unique<Listener>(options_.socket, 0660, 0755);
}

void Server::start_simulated() {
    WorldOptions world;
    world.dir = options_.kmdata;
    world.kdf_iterations = tuning_.kdf_iterations;
    world.limits = options_.world_limits;
    world_ = std::make_unique<World>(world);
    for (auto n = world_->modules().size(); n < options_.modules; ++n) {
        world_->enrol_module();
    }
    FleetOptions fleet{options_.op_latency_ms, options_.init_delay_ms, {}};
    fleet.objects.per_uid = options_.max_objects_per_uid;
    modules_ = std::make_unique<SimulatedModules>(*world_);
    sim_fleet_ = std::make_unique<Fleet>(*world_, fleet, modules_->factory());
    fleet_ = sim_fleet_.get();
    catalog_ = world_.get();
    destroyer_ = std::make_unique<Destroyer>(*world_, *fleet_);
}

void Server::start_members() {
    if (options_.worker_program.empty()) {
        throw Error(ErrorCode::internal, "no program to run the members' workers");
    }
    FleetOptions fleet{0, options_.init_delay_ms, {}};
    fleet.objects.per_uid = options_.max_objects_per_uid;
    members_ = std::make_unique<member::MemberFleet>(options_.fleet_config, fleet,
                                                     options_.worker_program);
    fleet_ = &members_->fleet();
    catalog_ = &members_->catalog();
}

void Server::reload() {
    if (!members_) {
        logger()->info("SIGHUP: a simulated fleet has no configuration to re-read");
        return;
    }
    logger()->info("SIGHUP: re-reading {}", members_->config_path().string());
    members_->reload();
}

Server::~Server() {
    for (auto& slot : connections_) {
        slot.connection->shutdown();
    }
    reap(true);
}

std::string Server::ready_line() const {
    const auto what = members_ ? "PKCS#11 members of " + members_->config_path().string()
                               : "world " + to_hex(world_->id());
    return options_.program_name + ": ready: " + std::to_string(fleet_->size()) + " modules, " +
           what + ", socket " + options_.socket.string() + ", admin socket " +
           options_.admin_socket.string();
}

std::size_t Server::live_connections() const {
    std::size_t live = 0;
    for (const auto& slot : connections_) {
        live += slot.connection->done() ? 0 : 1;
    }
    return live;
}

void Server::reap(bool all) {
    for (auto it = connections_.begin(); it != connections_.end();) {
        if (all || it->connection->done()) {
            it->thread.join();
            shares_.release(it->uid, it->admin);
            it = connections_.erase(it);
        } else {
            ++it;
        }
    }
}

void Server::accept_from(const Listener& listener, bool admin) {
    Fd fd(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
            return;
        }
        if (errno == EMFILE || errno == ENFILE) {
            logger()->error("cannot accept a connection on {}: out of file descriptors",
                            listener.path().string());
            std::this_thread::sleep_for(std::chrono::milliseconds(100)); // let some close
            return;
        }
        throw_errno("cannot accept a connection on " + listener.path().string());
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        logger()->warn("cannot read the peer credentials of a connection: {}", errno);
        return;
    }
    Peer peer{cred.uid, cred.pid, admin};
    const auto id = next_connection_++;
    if (admin && cred.uid != ::geteuid()) {
        logger()->warn("refused an admin connection from uid {} (pid {}): the admin socket is "
                       "for uid {} only",
                       cred.uid, cred.pid, ::geteuid());
        refuse(fd.get(), Error(ErrorCode::permission, "the admin socket is for uid " +
                                                          std::to_string(::geteuid()) + " only"));
        return;
    }
    reap(false); // counts out the connections that ended
    try {
        shares_.admit(cred.uid, admin);
    } catch (const Error& e) {
        logger()->warn("refused a connection from uid {} (pid {}) on the {} socket: {}", cred.uid,
                       cred.pid, admin ? "admin" : "client", e.what());
        refuse(fd.get(), e);
        return;
    }
    // Counted out again unless a thread serves it (reap() counts it out then).
    struct Uncount {
        ConnectionShares& shares;
        uid_t uid;
        bool admin;
        bool armed = true;
        ~Uncount() {
            if (armed) {
                shares.release(uid, admin);
            }
        }
    } uncount{shares_, cred.uid, admin};
    logger()->debug("connection {} from uid {} pid {} on the {} socket", id, cred.uid, cred.pid,
                    admin ? "admin" : "client");
    auto lease = handler_->attach(peer); // sets peer.client
    auto connection = std::make_unique<ServedConnection>(std::move(fd), peer, std::move(lease), id,
                                                         *handler_, tuning_.limits);
    auto* raw = connection.get();
    connections_.push_back(Slot{std::move(connection), std::thread(), cred.uid, admin});
    try {
        connections_.back().thread = std::thread([raw] { raw->run(); });
    } catch (const std::system_error& e) {
        connections_.pop_back();
        logger()->error("cannot start a thread for connection {}: {}", id, e.what());
        return;
    }
    uncount.armed = false;
}

void Server::run(int stop_fd, const std::function<bool()>& stop) {
    logger()->info("serving {} on {} (admin {}), {} modules",
                   members_ ? "the members of " + members_->config_path().string()
                            : "world " + to_hex(world_->id()),
                   options_.socket.string(), options_.admin_socket.string(), fleet_->size());
    for (;;) {
        std::array<pollfd, 3> pfds{
            {{client_->fd(), POLLIN, 0}, {admin_->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}}};
        if (::poll(pfds.data(), pfds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("poll");
        }
        if (pfds[2].revents != 0 && (!stop || stop())) {
            break;
        }
        if (pfds[0].revents != 0) {
            accept_from(*client_, false);
        }
        if (pfds[1].revents != 0) {
            accept_from(*admin_, true);
        }
    }
    logger()->info("stopping: closing {} connections", live_connections());
    handler_->stopping();
    client_.reset(); // stop accepting; the socket files go
    admin_.reset();
    for (auto& slot : connections_) {
        slot.connection->shutdown();
    }
    reap(true);
    if (world_) {
        logger()->info("stopped; the Security World in {} is intact", options_.kmdata.string());
    } else {
        logger()->info("stopped; the members' tokens are as they were");
    }
}

} // namespace preloadrun::sim
