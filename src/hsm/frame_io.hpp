#pragma once
// Private to src/hsm: the poll()-based waiting under write_frame/read_frame,
// and a read that reports a passed deadline as a value rather than an
// exception (the event stream polls with a zero timeout in a loop).

#include "preloadrun/hsm/frame.hpp"

#include <chrono>
#include <optional>
#include <poll.h>
#include <string_view>

namespace preloadrun::hsm::detail {

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

} // namespace preloadrun::hsm::detail
