#include "fake_server.hpp"

#include "preloadrun/common/error.hpp"

#include <cstring>
#include <exception>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

namespace hsmtest {

using namespace std::chrono_literals;
using preloadrun::Error;
using preloadrun::ErrorCode;
namespace hsm = preloadrun::hsm;

namespace {
auto soon() {
    return std::chrono::steady_clock::now() + 5s;
}
} // namespace

wire::Request Peer::read() {
    auto request = hsm::codec::decode_request(hsm::read_frame(fd_.get(), reader_, soon()));
    received.push_back(request);
    return request;
}

void Peer::reply(wire::Response response) {
    wire::ServerMessage message;
    *message.mutable_response() = std::move(response);
    send(message);
}

void Peer::send(const wire::ServerMessage& message) {
    hsm::write_frame(fd_.get(), hsm::codec::encode(message), soon());
}

void Peer::send_raw(std::span<const std::uint8_t> bytes) {
    if (::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(bytes.size())) {
        preloadrun::throw_errno("send");
    }
}

void Peer::hello(std::uint32_t version) {
    const auto request = read();
    if (!request.has_hello()) {
        throw Error(ErrorCode::protocol, "fake server: first request is not Hello");
    }
    wire::Response response;
    response.set_id(request.id());
    response.mutable_hello()->set_version(version);
    response.mutable_hello()->set_server("fakesim 0");
    response.mutable_hello()->set_world_id("WORLD");
    response.mutable_hello()->set_instance("0123456789abcdef");
    reply(response);
}

void Peer::wait_closed() {
    try {
        for (;;) {
            read();
        }
    } catch (const Error& e) {
        if (e.code() != ErrorCode::unavailable) {
            throw;
        }
    }
}

FakeServer::FakeServer(Script script) : path_((dir_ / "hsm.sock").string()) {
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (!listener_ ||
        ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_.get(), 4) != 0) {
        preloadrun::throw_errno("fake server socket");
    }
    thread_ = std::thread([this, script = std::move(script)] {
        std::optional<Peer> peer;
        try {
            pollfd pfd{listener_.get(), POLLIN, 0};
            if (::poll(&pfd, 1, 5000) != 1) {
                throw Error(ErrorCode::timeout, "fake server: no client connected");
            }
            peer.emplace(
                preloadrun::Fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC)));
            script(*peer);
        } catch (const std::exception& e) {
            error_ = e.what();
        }
        if (peer) {
            received_ = std::move(peer->received);
        }
    });
}

FakeServer::~FakeServer() {
    join();
}

hsm::Endpoint FakeServer::endpoint(std::chrono::milliseconds timeout) const {
    hsm::Endpoint endpoint;
    endpoint.socket_path = path_;
    endpoint.timeout = timeout;
    endpoint.client_name = "test_hsm";
    return endpoint;
}

void FakeServer::join() {
    if (thread_.joinable()) {
        thread_.join();
    }
}

FakeServer::Script serve(Handler handler) {
    return [handler = std::move(handler)](Peer& peer) {
        peer.hello();
        for (;;) {
            wire::Request request;
            try {
                request = peer.read();
            } catch (const Error& e) {
                if (e.code() == ErrorCode::unavailable) {
                    return; // the client is done
                }
                throw;
            }
            auto response = handler(request);
            response.set_id(request.id());
            peer.reply(std::move(response));
        }
    };
}

wire::Response ok() {
    wire::Response response;
    response.mutable_ok();
    return response;
}

wire::Response error_reply(wire::ErrorCode code, const std::string& message) {
    wire::Response response;
    response.mutable_error()->set_code(code);
    response.mutable_error()->set_message(message);
    return response;
}

} // namespace hsmtest
