#include "payloads.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "support/errors.hpp"
#include "wire/socket_io.hpp"

#include <array>
#include <cerrno>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>

using namespace preloadrun;
using namespace preloadrun::hsm;
using namespace std::chrono_literals;
using testsupport::code_of;
using wiretest::payload_of;
using wiretest::plain;

namespace {

struct SocketPair {
    Fd a, b;
    SocketPair() {
        int fds[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        a.reset(fds[0]);
        b.reset(fds[1]);
    }
};

auto in(std::chrono::milliseconds ms) {
    return std::chrono::steady_clock::now() + ms;
}

bool readable(int fd) {
    pollfd pfd{fd, POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 1;
}

} // namespace

TEST_CASE("write_frame and read_frame") {
    SocketPair pair;
    FrameReader reader;

    SUBCASE("round trip") {
        write_frame(pair.a.get(), to_bytes("hello"), in(1s));
        CHECK(plain(read_frame(pair.b.get(), reader, in(1s))) == to_bytes("hello"));
    }
    SUBCASE("a frame larger than the socket buffer, with a concurrent reader") {
        const Bytes big = payload_of(kMaxFrame);
        Bytes got;
        std::thread peer([&] { got = plain(read_frame(pair.b.get(), reader, in(10s))); });
        write_frame(pair.a.get(), big, in(10s));
        peer.join();
        CHECK(got == big);
    }
    SUBCASE("read_frame reads nothing beyond its frame") {
        write_frame(pair.a.get(), to_bytes("one"), in(1s));
        write_frame(pair.a.get(), to_bytes("two"), in(1s));
        CHECK(plain(read_frame(pair.b.get(), reader, in(1s))) == to_bytes("one"));
        CHECK(reader.pending() == 0);
        CHECK(readable(pair.b.get())); // so poll() still announces "two"
        CHECK(plain(read_frame(pair.b.get(), reader, in(1s))) == to_bytes("two"));
        CHECK_FALSE(readable(pair.b.get()));
    }
    SUBCASE("nothing arrives before the deadline: timeout") {
        const auto start = std::chrono::steady_clock::now();
        CHECK(code_of([&] { read_frame(pair.b.get(), reader, in(50ms)); }) == ErrorCode::timeout);
        CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    }
    SUBCASE("a partial frame then silence: timeout, and the part is kept") {
        const Bytes frame = encode_frame(to_bytes("split"));
        REQUIRE(::send(pair.a.get(), frame.data(), 6, 0) == 6);
        CHECK(code_of([&] { read_frame(pair.b.get(), reader, in(30ms)); }) == ErrorCode::timeout);
        CHECK(reader.pending() == 6);
        REQUIRE(::send(pair.a.get(), frame.data() + 6, frame.size() - 6, 0) ==
                static_cast<ssize_t>(frame.size() - 6));
        CHECK(plain(read_frame(pair.b.get(), reader, in(1s))) == to_bytes("split"));
    }
    SUBCASE("the peer closed: unavailable") {
        pair.a.reset();
        CHECK(code_of([&] { read_frame(pair.b.get(), reader, in(1s)); }) == ErrorCode::unavailable);
    }
    SUBCASE("the peer closed mid-frame: unavailable") {
        const Bytes frame = encode_frame(to_bytes("cut short"));
        REQUIRE(::send(pair.a.get(), frame.data(), 7, 0) == 7);
        pair.a.reset();
        CHECK(code_of([&] { read_frame(pair.b.get(), reader, in(1s)); }) == ErrorCode::unavailable);
    }
    SUBCASE("an oversized header from the peer: protocol") {
        const Bytes header{0x01, 0x00, 0x00, 0x00};
        REQUIRE(::send(pair.a.get(), header.data(), header.size(), 0) == 4);
        CHECK(code_of([&] { read_frame(pair.b.get(), reader, in(1s)); }) == ErrorCode::protocol);
    }
    SUBCASE("writing to a closed peer: unavailable, and no SIGPIPE") {
        pair.b.reset();
        CHECK(code_of([&] { write_frame(pair.a.get(), to_bytes("x"), in(1s)); }) ==
              ErrorCode::unavailable);
    }
    SUBCASE("writing while nobody reads: timeout") {
        CHECK(code_of([&] { write_frame(pair.a.get(), payload_of(kMaxFrame), in(50ms)); }) ==
              ErrorCode::timeout);
    }
    SUBCASE("writing an oversized payload: limit, nothing sent") {
        CHECK(code_of([&] { write_frame(pair.a.get(), Bytes(kMaxFrame + 1), in(1s)); }) ==
              ErrorCode::limit);
        CHECK_FALSE(readable(pair.b.get()));
    }
}

TEST_CASE("read_reply on a blocking socket with a receive timeout") {
    SocketPair pair;
    FrameReader reader;
    block_with_receive_timeout(pair.b.get(), 40ms);

    SUBCASE("a reply that has come: one recv() reads it, and what follows stays in the reader") {
        write_frame(pair.a.get(), to_bytes("one"), in(1s));
        write_frame(pair.a.get(), to_bytes("two"), in(1s));
        CHECK(plain(read_reply(pair.b.get(), reader, in(1s))) == to_bytes("one"));
        CHECK(reader.pending() > 0);
        CHECK_FALSE(readable(pair.b.get()));
        CHECK(plain(read_reply(pair.b.get(), reader, in(1s))) == to_bytes("two"));
        CHECK(reader.pending() == 0);
    }
    SUBCASE("a reply that comes while it waits in recv()") {
        std::thread peer([&] {
            std::this_thread::sleep_for(10ms);
            write_frame(pair.a.get(), to_bytes("later"), in(1s));
        });
        CHECK(plain(read_reply(pair.b.get(), reader, in(1s))) == to_bytes("later"));
        peer.join();
    }
    SUBCASE("a reply slower than the receive timeout: still awaited to the deadline") {
        std::thread peer([&] {
            std::this_thread::sleep_for(120ms);
            write_frame(pair.a.get(), to_bytes("slow"), in(1s));
        });
        CHECK(plain(read_reply(pair.b.get(), reader, in(2s))) == to_bytes("slow"));
        peer.join();
    }
    SUBCASE("a partial reply: the rest is awaited; the deadline holds") {
        const Bytes frame = encode_frame(to_bytes("split"));
        REQUIRE(::send(pair.a.get(), frame.data(), 6, 0) == 6);
        const auto start = std::chrono::steady_clock::now();
        CHECK(code_of([&] { read_reply(pair.b.get(), reader, in(100ms)); }) == ErrorCode::timeout);
        CHECK(std::chrono::steady_clock::now() - start >= 100ms);
        REQUIRE(::send(pair.a.get(), frame.data() + 6, frame.size() - 6, 0) ==
                static_cast<ssize_t>(frame.size() - 6));
        CHECK(plain(read_reply(pair.b.get(), reader, in(1s))) == to_bytes("split"));
    }
    SUBCASE("the peer closed: unavailable") {
        pair.a.reset();
        CHECK(code_of([&] { read_reply(pair.b.get(), reader, in(1s)); }) == ErrorCode::unavailable);
    }
    SUBCASE("the descriptor blocks; sending does not") {
        CHECK((::fcntl(pair.b.get(), F_GETFL) & O_NONBLOCK) == 0);
        CHECK(code_of([&] { write_frame(pair.b.get(), payload_of(kMaxFrame), in(50ms)); }) ==
              ErrorCode::timeout);
    }
}

TEST_CASE("SpinWindow: a brief spin before recv() sleeps, given up for a while after a miss") {
    SocketPair pair;
    FrameReader reader;
    SpinWindow spin;
    std::array<std::uint8_t, 64> buf{};

    SUBCASE("bytes already there: taken at once") {
        write_frame(pair.a.get(), to_bytes("x"), in(1s));
        CHECK(spin.receive(pair.b.get(), buf.data(), buf.size()) > 0);
    }
    SUBCASE("a reply read awake, whole") {
        write_frame(pair.a.get(), to_bytes("x"), in(1s));
        CHECK(plain(read_reply(pair.b.get(), reader, in(1s), spin)) == to_bytes("x"));
    }
    SUBCASE("nothing comes: it spins at most kMaxSpin, then skips the next waits") {
        const auto start = std::chrono::steady_clock::now();
        errno = 0;
        CHECK(spin.receive(pair.b.get(), buf.data(), buf.size()) == -1);
        CHECK(errno == EAGAIN);
        CHECK(std::chrono::steady_clock::now() - start >= SpinWindow::kMaxSpin);
        write_frame(pair.a.get(), to_bytes("y"), in(1s));
        for (unsigned i = 0; i < SpinWindow::kSkipAfterMiss; ++i) {
            CHECK(spin.receive(pair.b.get(), buf.data(), buf.size()) == -1); // not even a look
        }
        CHECK(spin.receive(pair.b.get(), buf.data(), buf.size()) > 0); // spinning again
    }
    SUBCASE("the peer closed: the end of the stream, at once") {
        pair.a.reset();
        CHECK(spin.receive(pair.b.get(), buf.data(), buf.size()) == 0);
        CHECK(code_of([&] { read_reply(pair.b.get(), reader, in(1s), spin); }) ==
              ErrorCode::unavailable);
    }
    SUBCASE("a reply longer than the spin's buffer, and one after the spin: read whole") {
        block_with_receive_timeout(pair.b.get(), 1000ms);
        const Bytes big(10000, 0x5a);
        write_frame(pair.a.get(), big, in(1s));
        CHECK(plain(read_reply(pair.b.get(), reader, in(2s), spin)) == big);
        std::thread peer([&] {
            std::this_thread::sleep_for(20ms);
            write_frame(pair.a.get(), to_bytes("late"), in(1s));
        });
        CHECK(plain(read_reply(pair.b.get(), reader, in(2s), spin)) == to_bytes("late"));
        peer.join();
    }
}
