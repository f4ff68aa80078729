#include "client_connection.hpp"

#include "preloadrun/common/log.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/socket_trust.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"
#include "wire/utf8.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace preloadrun::hsm::wire_detail {

namespace {

// Wipes a serialised request on every way out: it may hold a passphrase.
struct WipeOnExit {
    Bytes& bytes;
    ~WipeOnExit() { secure_wipe(bytes.data(), bytes.size()); }
};

// Whatever keeps a connection from being made is Error(unavailable): the
// service cannot be reached (hsmsim exits 3), with the reason.
// `checked`: the socket's directory, to say whose the socket is after EACCES.
Error reach_error(const std::string& path, std::string_view env_variable, int err,
                  const CheckedSocket* checked = nullptr) {
    const std::string text =
        "cannot reach the HSM service at " + path + ": " + std::generic_category().message(err);
    if (err == EACCES || err == EPERM) {
        std::optional<struct stat> socket;
        try {
            if (checked != nullptr) {
                socket = checked->dir.stat_entry(std::filesystem::path(path).filename().string());
            }
        } catch (const Error&) {
            // Only for the message.
        }
        if (socket) {
            return Error(ErrorCode::unavailable,
                         text + ": " + access_denied("the socket", *socket, Needed::write));
        }
        return Error(ErrorCode::unavailable,
                     text + ": the socket is not open to this user (uid " +
                         std::to_string(::geteuid()) +
                         "); the service's owner grants access through the socket's group");
    }
    return Error(ErrorCode::unavailable, text + " (is `hsmfleet serve` running? start it, or set " +
                                             std::string(env_variable) + " to its socket)");
}

std::string body_name(int body_case) {
    return "field " + std::to_string(body_case);
}

} // namespace

Connection::Connection(const Endpoint& endpoint, std::string_view env_variable)
    : path_(endpoint.socket_path), timeout_(endpoint.timeout) {
    connect_socket(env_variable);
    try {
        handshake(endpoint.client_name);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::timeout || e.origin() == Origin::peer) {
            throw;
        }
        // Something listens but does not serve (a hung or stopped service).
        throw Error(ErrorCode::unavailable,
                    "cannot reach the HSM service at " + path_ +
                        ": it accepted the connection but did not answer within " +
                        std::to_string(timeout_.count()) + " ms (is it hung or stopped?)");
    }
}

std::chrono::steady_clock::time_point
Connection::deadline(std::chrono::milliseconds at_least) const {
    return std::chrono::steady_clock::now() + std::max(timeout_, at_least);
}

void Connection::connect_socket(std::string_view env_variable) {
    if (path_.empty()) {
        throw Error(ErrorCode::usage,
                    "no socket path for the HSM service (set " + std::string(env_variable) + ")");
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof(addr.sun_path)) {
        throw Error(ErrorCode::usage, "the HSM service socket path is too long (" +
                                          std::to_string(path_.size()) + " bytes, at most " +
                                          std::to_string(sizeof(addr.sun_path) - 1) +
                                          "): " + path_);
    }
    // Nothing is sent before the socket and the service are known to be
    // trusted (see socket_trust.hpp).
    const auto trusted = TrustedUids::for_client();
    CheckedSocket checked;
    try {
        checked = check_socket_path(path_, trusted);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw reach_error(path_, env_variable, ENOENT);
        }
        throw;
    }
    std::memcpy(addr.sun_path, checked.connect_path.data(), checked.connect_path.size());

    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) {
        throw_errno("socket(AF_UNIX)");
    }
    const auto until = deadline();
    for (;;) {
        if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
            break;
        }
        int err = errno;
        if (err == EISCONN) {
            break;
        }
        if (err == EINTR) {
            continue;
        }
        if (err == EAGAIN) { // the service's listen backlog is full: retry until the deadline
            if (std::chrono::steady_clock::now() >= until) {
                throw Error(ErrorCode::unavailable,
                            "cannot reach the HSM service at " + path_ +
                                ": it accepted no connection within " +
                                std::to_string(timeout_.count()) +
                                " ms (its queue of new connections stays full)");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
        }
        if (err == EINPROGRESS) {
            detail::wait_ready(fd_.get(), POLLOUT, until, "connecting to " + path_);
            socklen_t len = sizeof err;
            if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
                err = errno;
            }
            if (err == 0) {
                break;
            }
        }
        throw reach_error(path_, env_variable, err, &checked);
    }
    check_peer(fd_.get(), path_, trusted);
    if (timeout_.count() > 0) {
        // A reply is then awaited in recv() itself (read_reply): one system
        // call instead of poll() and recv().
        block_with_receive_timeout(fd_.get(), timeout_);
    }
}

void Connection::handshake(const std::string& client_name) {
    wire::Request request;
    request.mutable_hello()->set_version(codec::kProtocolVersion);
    request.mutable_hello()->set_client(detail::to_utf8(client_name));
    const auto response = call(request, wire::Response::kHello);
    if (response.hello().version() != codec::kProtocolVersion) {
        broken_ = true;
        throw Error(ErrorCode::protocol,
                    "the HSM service at " + path_ + " speaks protocol version " +
                        std::to_string(response.hello().version()) + ", this client version " +
                        std::to_string(codec::kProtocolVersion) + ": upgrade the older one");
    }
    if (response.hello().instance().size() != kServiceInstanceSize) {
        broken_ = true;
        throw Error(ErrorCode::protocol,
                    "the HSM service at " + path_ + " did not say which instance of it answers");
    }
    hello_ = response.hello();
    world_id_.assign(hello_.world_id().begin(), hello_.world_id().end());
    instance_.assign(hello_.instance().begin(), hello_.instance().end());
    log::get("hsm")->debug("connected to {} at {} (protocol {})", hello_.server(), path_,
                           hello_.version());
}

void Connection::check_usable() const {
    if (broken_) {
        throw Error(ErrorCode::unavailable, "the connection to the HSM service at " + path_ +
                                                " was dropped after an earlier error");
    }
}

bool Connection::usable() const noexcept {
    if (broken_ || !fd_) {
        return false;
    }
    pollfd pfd{fd_.get(), POLLIN | POLLRDHUP, 0};
    int n;
    do {
        n = ::poll(&pfd, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n == 0;
}

void Connection::throw_parting_error() {
    wire::ServerMessage message;
    try {
        // No wait: a service that answered before closing has done so.
        auto frame = detail::try_read_frame(fd_.get(), reader_, std::chrono::steady_clock::now());
        if (!frame) {
            return;
        }
        message = codec::decode_server_message(*frame);
    } catch (const Error&) {
        return; // nothing to tell: the caller reports the closed connection
    }
    if (message.has_response() && message.response().id() == 0 && message.response().has_error()) {
        broken_ = true;
        fd_.reset();
        throw codec::from_wire(message.response().error());
    }
}

void Connection::fail(const Error& error) {
    broken_ = true;
    fd_.reset();
    if (error.code() == ErrorCode::timeout) {
        throw Error(error, "no answer from the HSM service at " + path_ + " within " +
                               std::to_string(waited_.count()) + " ms");
    }
    throw Error(error, "HSM service at " + path_ + ": " + error.what());
}

wire::Response Connection::call(wire::Request& request, wire::Response::BodyCase expected) {
    return call(request, expected, timeout_);
}

wire::Response Connection::call(wire::Request& request, wire::Response::BodyCase expected,
                                std::chrono::milliseconds at_least) {
    check_usable();
    request.set_id(++last_id_);
    Bytes bytes = codec::encode(request); // too big: nothing sent, the connection stays good
    WipeOnExit wipe{bytes};
    waited_ = std::max(timeout_, at_least);
    const auto until = deadline(at_least);

    wire::ServerMessage message;
    try {
        write_frame(fd_.get(), bytes, until);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::unavailable) {
            throw_parting_error();
        }
        fail(e);
    }
    try {
        message = codec::decode_server_message(read_reply(fd_.get(), reader_, until, spin_));
    } catch (const Error& e) {
        fail(e);
    }
    if (!message.has_response()) {
        fail(Error(ErrorCode::protocol, "an event arrived on a connection that did not subscribe"));
    }
    const wire::Response& response = message.response();
    if (response.id() == 0 && response.has_error()) { // about the connection: it ends here
        broken_ = true;
        fd_.reset();
        throw codec::from_wire(response.error());
    }
    if (response.id() != request.id()) {
        fail(Error(ErrorCode::protocol, "response to request " + std::to_string(response.id()) +
                                            " while waiting for request " +
                                            std::to_string(request.id())));
    }
    if (response.has_error()) {
        throw codec::from_wire(response.error());
    }
    if (response.body_case() != expected) {
        throw Error(ErrorCode::protocol, "HSM service at " + path_ + ": unexpected reply (" +
                                             body_name(response.body_case()) + ") to request (" +
                                             body_name(request.body_case()) + ")");
    }
    return std::move(*message.mutable_response());
}

std::optional<wire::Event> Connection::next_event(std::chrono::steady_clock::time_point until) {
    check_usable();
    wire::ServerMessage message;
    try {
        auto frame = detail::try_read_frame(fd_.get(), reader_, until);
        if (!frame) {
            return std::nullopt;
        }
        message = codec::decode_server_message(*frame);
    } catch (const Error& e) {
        fail(e);
    }
    if (message.has_event()) {
        return std::move(*message.mutable_event());
    }
    // A service going away may say why before closing the stream.
    broken_ = true;
    if (message.response().has_error()) {
        throw codec::from_wire(message.response().error());
    }
    throw Error(ErrorCode::protocol,
                "HSM service at " + path_ + ": a response arrived on an event stream");
}

} // namespace preloadrun::hsm::wire_detail
