#pragma once
// Frames on a stream socket: blocking reads and writes with a deadline, by
// poll(). The framing itself is frame.hpp.

#include "wire/frame.hpp"

#include <chrono>
#include <optional>
#include <poll.h>
#include <span>
#include <string_view>

namespace preloadrun::hsm {

// Blocking helpers on a stream socket, with a deadline (one already passed
// still gets one non-blocking attempt). read_frame reads no byte beyond the
// frame it returns. They throw
// Error(timeout) when the deadline passes, Error(unavailable) when the peer
// closed the connection, Error(io) on other socket errors, Error(protocol) on
// an oversized frame.
void write_frame(int fd, std::span<const std::uint8_t> payload,
                 std::chrono::steady_clock::time_point deadline);
SecretBytes read_frame(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline);
// Makes fd blocking, with `timeout` as its receive timeout (SO_RCVTIMEO; zero:
// none), for a peer that waits in recv() itself: recv() without MSG_DONTWAIT
// then blocks, up to the timeout (EAGAIN). Sending with write_frame stays
// non-blocking.
void block_with_receive_timeout(int fd, std::chrono::milliseconds timeout);
// read_frame for the answer to a request, where the peer sends nothing else:
// its first recv() asks for all that has come (what follows the frame stays
// in `reader`) and blocks when fd blocks, so that on a blocking socket with a
// receive timeout (SO_RCVTIMEO) a reply costs one system call; if nothing
// came by then, or only part, read_frame waits for the rest to the deadline.
SecretBytes read_reply(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline);

// For the client's connection (src/hsm): the poll()-based waiting under
// write_frame/read_frame, and a read that reports a passed deadline as a
// value rather than an exception (the event stream polls with a zero timeout
// in a loop).
namespace detail {

// Waits until fd has one of `events` (or hung up / in error). False when the
// deadline passed first. EINTR-safe.
bool wait_until(int fd, short events, std::chrono::steady_clock::time_point deadline);
// Same, but throws Error(timeout) "timed out <what>" when the deadline passes.
void wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline,
                std::string_view what);

// read_frame, except that nullopt means "deadline passed"; the bytes of a
// partial frame stay in `reader` for the next call.
std::optional<SecretBytes> try_read_frame(int fd, FrameReader& reader,
                                          std::chrono::steady_clock::time_point deadline);

} // namespace detail

} // namespace preloadrun::hsm
