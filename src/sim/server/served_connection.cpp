#include "server/served_connection.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "server/serve.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"

#include <array>
#include <cerrno>
#include <deque>
#include <memory>
#include <mutex>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.service");
}

// Events waiting for one subscriber; filled by the fleet (under its lock, so
// never blocking), emptied by the subscriber's own thread.
struct EventQueue {
    std::mutex mutex;
    std::deque<FleetEvent> events;
    bool overflowed = false;
    std::size_t limit = 0;
    Fd wake; // eventfd

    void push(const FleetEvent& event) {
        {
            std::lock_guard lock(mutex);
            if (events.size() >= limit) {
                overflowed = true;
            } else {
                events.push_back(event);
            }
        }
        std::uint64_t one = 1;
        (void)!::write(wake.get(), &one, sizeof one);
    }
};

// Client-chosen text, made safe for one log line.
std::string printable(const std::string& text) {
    std::string out;
    for (char c : text.substr(0, 80)) {
        out += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return out;
}

// Wipes the passphrases a request carries when it goes, whatever happened
// to it: decoded part-way, refused, handled or not.
class WipeOnExit {
public:
    explicit WipeOnExit(wire::Request& request) : request_(request) {}
    WipeOnExit(const WipeOnExit&) = delete;
    WipeOnExit& operator=(const WipeOnExit&) = delete;
    ~WipeOnExit() { wipe_secrets(request_); }

private:
    wire::Request& request_;
};

// -1: wait forever.
int poll_timeout(std::optional<Clock::time_point> deadline) {
    if (!deadline) {
        return -1;
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000));
}

} // namespace

ServedConnection::ServedConnection(Fd fd, Peer peer, Clients::Lease lease, std::uint64_t id,
                                   Handler& handler, ConnectionLimits limits)
    : fd_(std::move(fd)), peer_(peer), lease_(std::move(lease)), id_(id), handler_(handler),
      limits_(limits) {}

void ServedConnection::shutdown() noexcept {
    ::shutdown(fd_.get(), SHUT_RDWR);
}

void ServedConnection::run() noexcept {
    try {
        serve();
    } catch (const Error& e) {
        logger()->debug("connection {}: closed: {}", id_, e.what());
    } catch (const std::exception& e) {
        logger()->error("connection {}: closed after an unexpected failure: {}", id_, e.what());
    }
    ::shutdown(fd_.get(), SHUT_RDWR);
    logger()->debug("connection {} (uid {}, pid {}) ended", id_, peer_.uid, peer_.pid);
    lease_.release(); // the client's last connection: what it loaded goes
    done_.store(true);
}

void ServedConnection::send_response(wire::Response response) {
    wire::ServerMessage message;
    *message.mutable_response() = std::move(response);
    Bytes bytes;
    // A response may carry a decrypted plaintext: wiped once sent, however.
    struct Wipe {
        wire::ServerMessage& message;
        Bytes& bytes;
        ~Wipe() {
            secure_wipe(bytes.data(), bytes.size());
            if (message.response().has_data()) {
                auto* data = message.mutable_response()->mutable_data()->mutable_data();
                secure_wipe(data->data(), data->size());
            }
        }
    } wipe{message, bytes};
    try {
        bytes = hsm::codec::encode(message);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::limit) {
            throw;
        }
        const auto id = message.response().id();
        *message.mutable_response() = hsm::codec::error_response(
            id, Error(ErrorCode::limit, "the response would exceed the frame limit"));
        bytes = hsm::codec::encode(message);
    }
    hsm::write_frame(fd_.get(), bytes, Clock::now() + limits_.write_timeout);
}

bool ServedConnection::close_idle() {
    const auto seconds =
        std::chrono::duration_cast<std::chrono::duration<double>>(limits_.idle_timeout).count();
    if (handler_.clients().keeps_objects(lease_)) {
        logger()->debug("connection {} (uid {}, pid {}): idle for {} s, kept: it keeps what its "
                        "process loaded",
                        id_, peer_.uid, peer_.pid, seconds);
        return false;
    }
    logger()->info("connection {} (uid {}, pid {}): closed after {} s idle (hsmsim serve {} {})",
                   id_, peer_.uid, peer_.pid, seconds, kIdleTimeoutOption, seconds);
    return true;
}

void ServedConnection::serve() {
    hsm::FrameReader reader;
    std::array<std::uint8_t, 64 * 1024> chunk{};
    std::optional<Clock::time_point> frame_deadline; // set while a frame is partial
    auto idle_since = Clock::now();                  // the end of the last request
    hsm::SpinWindow spin;
    const bool idle_limit = limits_.idle_timeout.count() > 0;
    struct Wipe {
        std::array<std::uint8_t, 64 * 1024>& chunk;
        ~Wipe() { secure_wipe(chunk.data(), chunk.size()); }
    } wipe{chunk};
    // Between requests the thread waits in recv() itself (one system call per
    // request, not poll() then recv()), the idle limit as receive timeout;
    // shutdown() still wakes it.
    hsm::block_with_receive_timeout(fd_.get(), idle_limit ? limits_.idle_timeout
                                                          : std::chrono::milliseconds(0));
    for (;;) {
        ssize_t got = 0;
        if (!frame_deadline) {
            // No frame begun: wait for the next request in recv(), after a
            // brief spin (a busy client's next request comes within
            // microseconds); a timeout (EAGAIN) is the idle limit. What
            // follows the frame (a client sending several requests) stays in
            // the reader.
            got = spin.receive(fd_.get(), chunk.data(), chunk.size());
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                got = ::recv(fd_.get(), chunk.data(), chunk.size(), 0);
            }
        } else {
            // A frame is partial: its deadline is absolute, so poll() for it.
            pollfd pfd{fd_.get(), POLLIN, 0};
            const int n = ::poll(&pfd, 1, poll_timeout(frame_deadline));
            if (n == 0 && Clock::now() >= *frame_deadline) {
                logger()->warn("connection {} (uid {}, pid {}): dropped, a frame stayed "
                               "incomplete for {} ms",
                               id_, peer_.uid, peer_.pid, limits_.partial_frame_timeout.count());
                return;
            }
            if (n <= 0) {
                if (n < 0 && errno != EINTR) {
                    throw_errno("poll");
                }
                continue;
            }
            got = ::recv(fd_.get(), chunk.data(), std::min(reader.wanted(), chunk.size()),
                         MSG_DONTWAIT);
        }
        if (got == 0) {
            return; // closed by the peer (or shut down by the server)
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                const auto now = Clock::now();
                if (!frame_deadline && idle_limit && now >= idle_since + limits_.idle_timeout) {
                    if (close_idle()) {
                        return;
                    }
                    idle_since = now; // looked at again after another idle_timeout
                }
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            throw_errno("receiving from the client");
        }
        try {
            reader.feed({chunk.data(), static_cast<std::size_t>(got)});
        } catch (const Error& e) {
            logger()->warn("connection {} (uid {}, pid {}): {}; closing it", id_, peer_.uid,
                           peer_.pid, e.what());
            send_response(hsm::codec::error_response(0, e));
            return;
        }
        while (auto payload = reader.next()) { // wiped when it goes
            if (!process(*payload)) {
                return;
            }
            idle_since = Clock::now();
        }
        if (reader.pending() == 0) {
            frame_deadline.reset();
        } else if (!frame_deadline) {
            frame_deadline = Clock::now() + limits_.partial_frame_timeout;
        }
    }
}

bool ServedConnection::process(std::span<const std::uint8_t> payload) {
    wire::Request request;
    const WipeOnExit wipe(request);
    try {
        hsm::codec::decode_request(payload, request);
    } catch (const Error& e) {
        logger()->warn("connection {} (uid {}, pid {}): {}; closing it", id_, peer_.uid, peer_.pid,
                       e.what());
        send_response(hsm::codec::error_response(0, e));
        return false;
    }
    if (!hello_done_) {
        if (!request.has_hello()) {
            send_response(hsm::codec::error_response(
                request.id(),
                Error(ErrorCode::protocol, "the first request on a connection must be Hello, not " +
                                               std::string(request_name(request)))));
            return false;
        }
        auto response = handler_.handle(request, peer_);
        const bool refused = response.has_error();
        send_response(std::move(response));
        if (refused) {
            return false;
        }
        hello_done_ = true;
        logger()->debug("connection {}: Hello from '{}' (uid {}, pid {})", id_,
                        printable(request.hello().client()), peer_.uid, peer_.pid);
        return true;
    }
    if (request.has_subscribe()) {
        stream_events(request);
        return false;
    }
    send_response(handler_.handle(request, peer_));
    return true;
}

void ServedConnection::stream_events(const wire::Request& request) {
    auto queue = std::make_shared<EventQueue>();
    queue->limit = limits_.max_queued_events;
    queue->wake = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!queue->wake) {
        throw_errno("eventfd");
    }
    auto [response, subscription] =
        handler_.subscribe(request, [queue](const FleetEvent& event) { queue->push(event); });
    send_response(std::move(response));
    logger()->debug("connection {} (uid {}, pid {}): subscribed to module events", id_, peer_.uid,
                    peer_.pid);
    std::array<std::uint8_t, 4096> scratch{};
    for (;;) {
        std::array<pollfd, 2> pfds{{{fd_.get(), POLLIN, 0}, {queue->wake.get(), POLLIN, 0}}};
        if (::poll(pfds.data(), pfds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("poll");
        }
        if (pfds[0].revents != 0) {
            // The client sends nothing after Subscribe; what it does send is
            // ignored. End of stream ends the subscription.
            ssize_t got = ::recv(fd_.get(), scratch.data(), scratch.size(), MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
                return;
            }
        }
        if (pfds[1].revents != 0) {
            std::uint64_t count = 0;
            (void)!::read(queue->wake.get(), &count, sizeof count);
            std::deque<FleetEvent> events;
            bool overflowed = false;
            {
                std::lock_guard lock(queue->mutex);
                events.swap(queue->events);
                overflowed = queue->overflowed;
            }
            if (overflowed) {
                logger()->warn("connection {} (uid {}, pid {}): subscriber dropped: it fell {} "
                               "events behind",
                               id_, peer_.uid, peer_.pid, limits_.max_queued_events);
                return;
            }
            for (const auto& event : events) {
                wire::ServerMessage message;
                auto* wire_event = message.mutable_event();
                *wire_event = hsm::codec::to_wire(event.event);
                wire_event->set_snapshot(false);
                if (event.added) {
                    wire_event->set_previous_state(wire::MODULE_STATE_UNSPECIFIED);
                }
                hsm::write_frame(fd_.get(), hsm::codec::encode(message),
                                 Clock::now() + limits_.write_timeout);
            }
        }
    }
}

} // namespace preloadrun::sim
