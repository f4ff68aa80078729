#include "reload_watch.hpp"

#include "log.hpp"
#include "preloadrun/common/error.hpp"

#include <array>
#include <csignal>
#include <cstring>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace preloadrun::pkcs11 {

ReloadWatch::ReloadWatch(const std::filesystem::path& file)
    : name_(file.filename().string()), inotify_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)),
      stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!inotify_ || !stop_) {
        throw_errno("cannot start watching the tokens file");
    }
    auto dir = file.parent_path();
    if (dir.empty()) {
        dir = ".";
    }
    if (::inotify_add_watch(inotify_.get(), dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        throw_errno("cannot watch " + dir.string());
    }
    // The thread takes no signals meant for the application.
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
        thread_ = std::thread([this] { run(); });
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

ReloadWatch::~ReloadWatch() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    if (thread_.joinable()) {
        thread_.join();
    }
}

void ReloadWatch::run() noexcept {
    alignas(inotify_event) std::array<char, 4096> buffer{};
    for (;;) {
        std::array<pollfd, 2> fds{pollfd{inotify_.get(), POLLIN, 0},
                                  pollfd{stop_.get(), POLLIN, 0}};
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            logger().error("watching the tokens file failed: {}", std::strerror(errno));
            return;
        }
        if (fds[1].revents != 0) {
            return;
        }
        bool ours = false;
        for (;;) {
            const ssize_t n = ::read(inotify_.get(), buffer.data(), buffer.size());
            if (n <= 0) {
                break;
            }
            for (ssize_t off = 0; off < n;) {
                inotify_event event{};
                std::memcpy(&event, buffer.data() + off, sizeof event);
                const char* name = buffer.data() + off + sizeof(inotify_event);
                if ((event.mask & IN_Q_OVERFLOW) != 0 ||
                    (event.len > 0 &&
                     name_ == std::string_view(name, ::strnlen(name, event.len)))) {
                    ours = true;
                }
                off += static_cast<ssize_t>(sizeof(inotify_event) + event.len);
            }
        }
        if (ours) {
            changed();
        }
    }
}

} // namespace preloadrun::pkcs11
