#include "preloadrun/common/systemd.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/log.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>

namespace preloadrun {

bool notify_systemd(std::string_view state) noexcept {
    const char* env = getenv_nonempty("NOTIFY_SOCKET");
    if (env == nullptr) {
        return true;
    }
    try {
        auto logger = log::get("systemd");
        std::string_view path(env);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if ((path[0] != '/' && path[0] != '@') || path.size() >= sizeof addr.sun_path) {
            logger->warn("NOTIFY_SOCKET '{}' is not a socket path or an abstract name; not "
                         "notifying systemd",
                         path);
            return false;
        }
        std::memcpy(addr.sun_path, path.data(), path.size());
        if (path[0] == '@') {
            addr.sun_path[0] = '\0'; // abstract namespace
        }
        auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                          (path[0] == '/' ? 1 : 0));
        Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (!fd || ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                            reinterpret_cast<const sockaddr*>(&addr), len) < 0) {
            logger->warn("cannot notify systemd on {}: {}", path, std::strerror(errno));
            return false;
        }
        logger->debug("notified systemd: {}", state);
        return true;
    } catch (...) {
        return false;
    }
}

} // namespace preloadrun
