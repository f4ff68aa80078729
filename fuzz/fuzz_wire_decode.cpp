// libFuzzer target: bytes from a peer, through the frame reader and both
// decoders, then the conversions to the types of types.hpp and a re-encode.
// Anything but preloadrun::Error escaping, a crash, a sanitizer report or a
// re-encode that does not decode to the same message is a bug.
//
// Input: a stream of frames, fed to FrameReader in chunks of varying size;
// the whole input is also decoded as one unframed message.

#include "preloadrun/common/error.hpp"
#include "wire/codec.hpp"
#include "wire/frame.hpp"

#include <cstdlib>
#include <span>

namespace {

namespace codec = preloadrun::hsm::codec;
namespace wire = preloadrun::wire;

template <class Message, class Decode> void check_reencode(const Message& message, Decode decode) {
    const auto bytes = codec::encode(message);
    if (decode(bytes).SerializeAsString() != message.SerializeAsString()) {
        std::abort(); // encode/decode is not a round trip
    }
}

void convert(const wire::Request& request) {
    switch (request.body_case()) {
    case wire::Request::kCreateToken:
        codec::from_wire(request.create_token().type());
        break;
    case wire::Request::kGenerateKey:
        codec::from_wire(request.generate_key().type());
        break;
    case wire::Request::kSign:
        codec::from_wire(request.sign().mechanism());
        break;
    case wire::Request::kVerify:
        codec::from_wire(request.verify().mechanism());
        break;
    case wire::Request::kEncrypt:
        codec::from_wire(request.encrypt().mechanism());
        break;
    case wire::Request::kDecrypt:
        codec::from_wire(request.decrypt().mechanism());
        break;
    default:
        break;
    }
}

void convert(const wire::Response& response) {
    switch (response.body_case()) {
    case wire::Response::kError:
        codec::from_wire(response.error().code());
        break;
    case wire::Response::kModules:
        for (const auto& m : response.modules().modules()) {
            codec::from_wire(m);
        }
        break;
    case wire::Response::kModule:
        codec::from_wire(response.module());
        break;
    case wire::Response::kTokens:
        for (const auto& t : response.tokens().tokens()) {
            codec::from_wire(t);
        }
        break;
    case wire::Response::kToken:
        codec::from_wire(response.token());
        break;
    case wire::Response::kKeys:
        for (const auto& k : response.keys().keys()) {
            codec::from_wire(k);
        }
        break;
    case wire::Response::kGenerated:
        codec::from_wire(response.generated().key());
        break;
    default:
        break;
    }
}

void exercise(std::span<const std::uint8_t> bytes) {
    try {
        const auto request = codec::decode_request(bytes);
        check_reencode(request,
                       [](std::span<const std::uint8_t> b) { return codec::decode_request(b); });
        convert(request);
    } catch (const preloadrun::Error&) {
    }
    try {
        const auto message = codec::decode_server_message(bytes);
        check_reencode(message, codec::decode_server_message);
        if (message.has_event()) {
            codec::from_wire(message.event());
        } else {
            convert(message.response());
        }
    } catch (const preloadrun::Error&) {
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> input(data, size);
    exercise(input);

    preloadrun::hsm::FrameReader reader;
    try {
        std::size_t at = 0;
        std::size_t step = 1;
        while (at < size) {
            const std::size_t n = std::min(step, size - at);
            reader.feed(input.subspan(at, n));
            at += n;
            step = (step * 3 + data[at - 1]) % 61 + 1;
            while (auto frame = reader.next()) {
                exercise(*frame);
            }
        }
    } catch (const preloadrun::Error&) {
    }
    return 0;
}
