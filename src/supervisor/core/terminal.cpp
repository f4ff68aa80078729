#include "core/terminal.hpp"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

namespace preloadrun::supervisor {

Terminal Terminal::open_controlling() {
    Fd tty(::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (tty && ::tcgetpgrp(tty.get()) >= 0) {
        return Terminal(std::move(tty));
    }
    // No /dev/tty node (a minimal container): one of stdio may still be our
    // controlling terminal; tcgetpgrp() fails (ENOTTY) for any other tty.
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
        if (::isatty(fd) == 1 && ::tcgetpgrp(fd) >= 0) {
            Fd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
            if (dup) {
                return Terminal(std::move(dup));
            }
        }
    }
    return Terminal();
}

pid_t Terminal::foreground() const noexcept {
    return present() ? ::tcgetpgrp(fd_.get()) : -1;
}

bool Terminal::we_are_foreground() const noexcept {
    return present() && foreground() == ::getpgrp();
}

bool Terminal::give_to(pid_t pgid) const noexcept {
    return present() && ::tcsetpgrp(fd_.get(), pgid) == 0;
}

bool Terminal::job_control() const noexcept {
    return present() && ::getpid() != 1 && ::getsid(0) != ::getpid();
}

} // namespace preloadrun::supervisor
