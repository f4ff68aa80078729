#pragma once
// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

#include <string_view>

namespace preloadrun {

// Sends `state` ("READY=1", "STOPPING=1") when NOTIFY_SOCKET is set (a path,
// or '@' + an abstract name). Returns false (and logs) if it could not.
// Does nothing and returns true when NOTIFY_SOCKET is unset.
bool notify_systemd(std::string_view state) noexcept;

} // namespace preloadrun
