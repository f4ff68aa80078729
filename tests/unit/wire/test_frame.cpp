#include "payloads.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"
#include "wire/frame.hpp"

#include <doctest/doctest.h>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::hsm;
using testsupport::code_of;
using wiretest::payload_of;
using wiretest::plain;

TEST_CASE("encode_frame") {
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

TEST_CASE("FrameReader") {
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
