#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "support/errors.hpp"
#include "wire/socket_io.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <poll.h>
#include <sys/socket.h>
#include <thread>

using namespace preloadrun;
using namespace preloadrun::hsm;
using namespace std::chrono_literals;

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

Bytes payload_of(std::size_t size) {
    Bytes out(size);
    for (std::size_t i = 0; i < size; ++i) {
        out[i] = static_cast<std::uint8_t>(i * 7 + 3);
    }
    return out;
}

// A frame's payload as plain Bytes, to compare with what was sent.
Bytes plain(const SecretBytes& payload) {
    return {payload.begin(), payload.end()};
}
Bytes plain(const std::optional<SecretBytes>& payload) {
    REQUIRE(payload);
    return plain(*payload);
}

bool readable(int fd) {
    pollfd pfd{fd, POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 1;
}

using testsupport::code_of;

} // namespace

TEST_CASE("hsm::encode_frame") {
    SUBCASE("big-endian length, then the payload") {
        const Bytes frame = encode_frame(to_bytes("abc"));
        CHECK(frame == Bytes{0, 0, 0, 3, 'a', 'b', 'c'});
    }
    SUBCASE("an empty payload is a bare header") {
        CHECK(encode_frame({}) == Bytes{0, 0, 0, 0});
    }
    SUBCASE("a payload of kMaxFrame bytes is accepted, one more is refused") {
        const Bytes frame = encode_frame(Bytes(kMaxFrame));
        CHECK(frame.size() == kFrameHeader + kMaxFrame);
        CHECK(frame[1] == 0x10); // 0x00100000
        CHECK(code_of([] { encode_frame(Bytes(kMaxFrame + 1)); }) == ErrorCode::limit);
    }
}

TEST_CASE("hsm::FrameReader") {
    FrameReader reader;
    const Bytes one = payload_of(300);
    const Bytes stream = [&] {
        Bytes s = encode_frame(one);
        const Bytes two = encode_frame(to_bytes("second"));
        s.insert(s.end(), two.begin(), two.end());
        return s;
    }();

    SUBCASE("nothing buffered") {
        CHECK_FALSE(reader.next());
        CHECK(reader.pending() == 0);
        CHECK(reader.wanted() == kFrameHeader);
    }
    SUBCASE("two frames fed at once come out in order") {
        reader.feed(stream);
        CHECK(plain(reader.next()) == one);
        CHECK(plain(reader.next()) == to_bytes("second"));
        CHECK_FALSE(reader.next());
        CHECK(reader.pending() == 0);
    }
    SUBCASE("byte by byte") {
        std::vector<Bytes> frames;
        for (const std::uint8_t byte : stream) {
            REQUIRE(reader.wanted() > 0);
            reader.feed({&byte, 1});
            while (auto frame = reader.next()) {
                frames.push_back(plain(frame));
            }
        }
        REQUIRE(frames.size() == 2);
        CHECK(frames[0] == one);
        CHECK(frames[1] == to_bytes("second"));
    }
    SUBCASE("split inside the header and inside the body") {
        for (const std::size_t cut : {std::size_t{2}, std::size_t{4}, std::size_t{150}}) {
            FrameReader r;
            const std::span<const std::uint8_t> all(stream);
            r.feed(all.first(cut));
            CHECK_FALSE(r.next());
            r.feed(all.subspan(cut));
            CHECK(plain(r.next()) == one);
            CHECK(plain(r.next()) == to_bytes("second"));
        }
    }
    SUBCASE("wanted() counts the missing header, then the missing body") {
        const Bytes frame = encode_frame(one);
        reader.feed(std::span(frame).first(1));
        CHECK(reader.wanted() == 3);
        reader.feed(std::span(frame).subspan(1, 9));
        CHECK(reader.wanted() == frame.size() - 10);
        reader.feed(std::span(frame).subspan(10));
        CHECK(reader.wanted() == 0);
        CHECK(plain(reader.next()) == one);
    }
    SUBCASE("an empty frame is a frame") {
        reader.feed(Bytes{0, 0, 0, 0});
        CHECK(plain(reader.next()) == Bytes{});
    }
    SUBCASE("a frame of exactly kMaxFrame bytes is accepted") {
        reader.feed(encode_frame(Bytes(kMaxFrame, 0x5a)));
        const auto frame = reader.next();
        REQUIRE(frame);
        CHECK(frame->size() == kMaxFrame);
    }
    SUBCASE("an oversized header is refused as soon as it is complete") {
        reader.feed(Bytes{0x00, 0x10});
        CHECK(code_of([&] { reader.feed(Bytes{0x00, 0x01}); }) == ErrorCode::protocol);
        FrameReader r2;
        CHECK(code_of([&] { r2.feed(Bytes{0xff, 0xff, 0xff, 0xff}); }) == ErrorCode::protocol);
    }
    SUBCASE("an oversized header behind a good frame is refused too") {
        Bytes bytes = encode_frame(to_bytes("ok"));
        bytes.insert(bytes.end(), {0x7f, 0, 0, 0});
        CHECK(code_of([&] { reader.feed(bytes); }) == ErrorCode::protocol);
    }
    SUBCASE("a truncated frame stays pending") {
        const Bytes frame = encode_frame(one);
        reader.feed(std::span(frame).first(frame.size() - 1));
        CHECK_FALSE(reader.next());
        CHECK(reader.pending() == frame.size() - 1);
        CHECK(reader.wanted() == 1);
    }
    SUBCASE("the buffer is compacted: feeding many frames does not grow it") {
        for (int i = 0; i < 1000; ++i) {
            reader.feed(stream);
            CHECK(plain(reader.next()) == one);
            CHECK(plain(reader.next()) == to_bytes("second"));
        }
        CHECK(reader.pending() == 0);
    }
}

TEST_CASE("hsm::write_frame and hsm::read_frame") {
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
