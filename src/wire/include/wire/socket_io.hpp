#pragma once
// Frames on a stream socket: blocking reads and writes with a deadline, by
// poll(). The framing itself is frame.hpp.

#include "wire/frame.hpp"

#include <chrono>
#include <optional>
#include <poll.h>
#include <span>
#include <string_view>
#include <sys/types.h>

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

// A brief, adaptive spin before a blocking recv(): on a machine where waking
// a sleeping thread costs tens of microseconds, a reply (or the next request
// of a busy client) that comes within a few microseconds is taken without
// going to sleep. The window follows what it sees: twice the wait that last
// ended in bytes (between kMinSpin and kMaxSpin); a spin that ends with
// nothing is not tried again for the next kSkipAfterMiss waits. Nothing
// spins longer than kMaxSpin, so a connection with nothing to do sleeps in
// recv() as before (no wake-up while idle). One thread of a process spins at
// a time, and it yields the core to any thread that can run: with more
// threads than cores busy, the others sleep as before. A spin whose bytes
// came only after the window counts as a miss: a yield handed the core to a
// busy process for a whole time slice, and spinning on would do so again at
// every request (a signing thread next to two compilers made about 1.6 times
// as many signatures with this rule as without). One per connection; not
// thread-safe.
class SpinWindow {
public:
    static constexpr std::chrono::microseconds kMinSpin{10};
    static constexpr std::chrono::microseconds kMaxSpin{100};
    static constexpr unsigned kSkipAfterMiss = 8;

    // Tries recv(fd, buf, len, MSG_DONTWAIT) until bytes come (or the end of
    // the stream, or an error) or the window passes: recv()'s result, or -1
    // with errno EAGAIN when nothing came in time or no spin was due (then
    // the caller sleeps in its own recv()).
    ssize_t receive(int fd, void* buf, std::size_t len);

private:
    std::chrono::nanoseconds window_{kMaxSpin};
    unsigned skip_ = 0;
};

// read_reply, spinning first by `spin`.
SecretBytes read_reply(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline,
                       SpinWindow& spin);

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
