#pragma once
// A scripted stand-in for hsmsim: listens on a Unix socket in a private temp
// directory, accepts one connection in a thread and runs a script on it.
// Whatever the script received is kept for the test to check after join().

#include "preloadrun/common/fd.hpp"
#include "preloadrun/hsm/service.hpp"
#include "support/temp_dir.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hsmtest {

namespace wire = preloadrun::wire;

// The server's side of one connection.
class Peer {
public:
    explicit Peer(preloadrun::Fd fd) : fd_(std::move(fd)) {}
    int fd() const noexcept { return fd_.get(); }

    wire::Request read();                          // throws when the client has gone
    void reply(wire::Response response);           // as a ServerMessage{response}
    void send(const wire::ServerMessage& message); // any message
    void send_raw(std::span<const std::uint8_t> bytes);
    // Reads Hello and answers with `version`.
    void hello(std::uint32_t version = preloadrun::hsm::codec::kProtocolVersion);
    // Blocks until the client closes its end (or 5 s pass).
    void wait_closed();
    void close() { fd_.reset(); }

    std::vector<wire::Request> received; // every request read, Hello included

private:
    preloadrun::Fd fd_;
    preloadrun::hsm::FrameReader reader_;
};

class FakeServer {
public:
    using Script = std::function<void(Peer&)>;
    explicit FakeServer(Script script);
    FakeServer(const FakeServer&) = delete;
    FakeServer& operator=(const FakeServer&) = delete;
    ~FakeServer();

    preloadrun::hsm::Endpoint
    endpoint(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) const;
    // Waits for the script to end. Then received() and error() may be read.
    void join();
    const std::vector<wire::Request>& received() const { return received_; }
    // What went wrong inside the script ("" if nothing).
    const std::string& error() const { return error_; }

private:
    testsupport::TempDir dir_;
    std::string path_;
    preloadrun::Fd listener_;
    std::thread thread_;
    std::vector<wire::Request> received_;
    std::string error_;
};

// A script: handshake, then answer each request with handler(request) until
// the client closes the connection.
using Handler = std::function<wire::Response(const wire::Request&)>;
FakeServer::Script serve(Handler handler);

// Response builders.
wire::Response ok();
wire::Response error_reply(wire::ErrorCode code, const std::string& message);

} // namespace hsmtest
