#pragma once
// Private to src/hsm: the client side of one connection to hsmsim. Connects,
// performs the Hello handshake, then carries requests and their responses (or,
// after Subscribe, events). Any transport failure (timeout, peer gone, broken
// framing) leaves the stream in an unknown state, so it marks the connection
// broken: later calls throw Error(unavailable) and the caller makes a new
// connection.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/hsm/service.hpp"
#include "wire.pb.h"
#include "wire/frame.hpp"
#include "wire/socket_io.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace preloadrun::hsm::wire_detail {

class Connection {
public:
    // env_variable names the variable that sets this socket, for messages.
    Connection(const Endpoint& endpoint, std::string_view env_variable);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Assigns the request's id, sends it, and returns the response, whose body
    // must be `expected` (else Error(protocol)). An error response is thrown as
    // Error(its code, its message). The serialised request is wiped after use.
    wire::Response call(wire::Request& request, wire::Response::BodyCase expected);
    // The same with a longer wait for the answer, for a request that may
    // take long (key generation): at least `at_least`.
    wire::Response call(wire::Request& request, wire::Response::BodyCase expected,
                        std::chrono::milliseconds at_least);

    // On a subscribed connection: the next event, or nullopt when the deadline
    // passes first (a partial frame stays buffered).
    std::optional<wire::Event> next_event(std::chrono::steady_clock::time_point deadline);

    // Not broken, and nothing waiting on an idle request/response
    // connection: no answer is due, so a readable socket is one the service
    // closed (or said why it closes). Does not wait.
    bool usable() const noexcept;

    int fd() const noexcept { return fd_.get(); }
    const wire::HelloReply& hello() const noexcept { return hello_; }
    const Bytes& world_id() const noexcept { return world_id_; }
    const Bytes& instance() const noexcept { return instance_; }

private:
    std::chrono::steady_clock::time_point deadline(std::chrono::milliseconds at_least = {}) const;
    void connect_socket(std::string_view env_variable);
    void handshake(const std::string& client_name);
    void check_usable() const;
    // Marks the connection broken and rethrows `error` naming the service.
    [[noreturn]] void fail(const Error& error);
    // After a request could not be sent because the service closed the
    // connection: throws the one error it may have answered first (a
    // connection it refused, past a limit), if it is there to read.
    void throw_parting_error();

    std::string path_;
    std::chrono::milliseconds timeout_;
    std::chrono::milliseconds waited_{0}; // how long the last call could wait, for messages
    Fd fd_;
    FrameReader reader_;
    SpinWindow spin_; // how long a reply is waited for awake before recv() sleeps
    std::uint64_t last_id_ = 0;
    wire::HelloReply hello_;
    Bytes world_id_;
    Bytes instance_;
    bool broken_ = false;
};

} // namespace preloadrun::hsm::wire_detail
