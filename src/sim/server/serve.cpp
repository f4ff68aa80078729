// serve(): the hsmsim service in the foreground, as `hsmsim serve` runs it.

#include "server/serve.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/systemd.hpp"
#include "server/server.hpp"

#include <cstdio>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every thread
// it starts) for its lifetime; they are read from a signalfd instead.
class BlockedSignals {
public:
    BlockedSignals() {
        sigemptyset(&set_);
        sigaddset(&set_, SIGTERM);
        sigaddset(&set_, SIGINT);
        sigaddset(&set_, SIGHUP);
        if (::pthread_sigmask(SIG_BLOCK, &set_, &old_) != 0) {
            throw Error(ErrorCode::internal, "cannot block SIGTERM, SIGINT and SIGHUP");
        }
        fd_ = Fd(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!fd_) {
            int err = errno;
            ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
            throw_errno("signalfd", err);
        }
    }
    BlockedSignals(const BlockedSignals&) = delete;
    BlockedSignals& operator=(const BlockedSignals&) = delete;
    ~BlockedSignals() {
        fd_.reset();
        ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    int fd() const noexcept { return fd_.get(); }
    // The signal that arrived (0 if none could be read).
    int take() const noexcept {
        signalfd_siginfo info{};
        if (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            return static_cast<int>(info.ssi_signo);
        }
        return 0;
    }

private:
    sigset_t set_{};
    sigset_t old_{};
    Fd fd_;
};

} // namespace

int serve(const ServeOptions& options) {
    BlockedSignals signals;
    Server server(options);
    auto line = server.ready_line() + "\n";
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
    notify_systemd("READY=1");
    int sig = 0;
    server.run(signals.fd(), [&] {
        sig = signals.take();
        if (sig == SIGHUP) {
            server.reload();
            return false;
        }
        return true;
    });
    notify_systemd("STOPPING=1");
    log::get("sim.service")
        ->info("exiting after {}", sig == SIGTERM  ? "SIGTERM"
                                   : sig == SIGINT ? "SIGINT"
                                                   : "a stop request");
    return 0;
}

} // namespace preloadrun::sim
