#include "service_mode.hpp"

#include "core/signals.hpp"
#include "core/terminal.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/systemd.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <iostream>
#include <unistd.h>

namespace preloadrun::supervisor {

namespace {

// 'text' quoted for a POSIX shell.
std::string shell_quote(const std::string& text) {
    std::string out = "'";
    for (char c : text) {
        if (c == '\'') {
            out += "'\\''";
        } else {
            out += c;
        }
    }
    return out + "'";
}

void export_line(std::string& out, const std::string& name, const std::string& value) {
    out += name + "=" + shell_quote(value) + "; export " + name + ";\n";
}

bool is_stop_request(int signo) {
    return signo == SIGTSTP || signo == SIGTTIN || signo == SIGTTOU;
}

} // namespace

std::string shell_lines(const AppEnvironment& env) {
    std::string out;
    for (const auto& [name, value] : env.set) {
        export_line(out, name, value);
    }
    for (const auto& name : env.unset) {
        out += "unset " + name + ";\n";
    }
    out += "echo preloadrun pid " + std::to_string(::getpid()) + ";\n";
    return out;
}

int run_service_mode(EventLoop& loop, const AppEnvironment& env) {
    std::cout << shell_lines(env) << std::flush;
    Fd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    if (null && null.get() != STDOUT_FILENO) {
        ::dup2(null.get(), STDOUT_FILENO);
    }
    notify_systemd("READY=1");
    auto logger = log::get("supervisor");
    logger->info("keeping the tokens loaded until SIGTERM or SIGINT");

    SignalFd signals;
    const bool job_control = Terminal::open_controlling().job_control();
    int stop_signal = 0;
    loop.watch(signals.fd(), [&] {
        for (const auto& received : signals.read_pending()) {
            if ((received.signo == SIGTERM || received.signo == SIGINT) &&
                !caller_ignored(received.signo)) {
                stop_signal = received.signo;
                loop.stop();
            } else if (is_stop_request(received.signo) && job_control &&
                       !caller_ignored(received.signo)) {
                // Ctrl-Z (or a background read or write of the terminal)
                // under a job-control shell: stop, as any program would, so
                // that `bg` can send us to the background. The tokens stay
                // loaded meanwhile.
                logger->debug("{}: stopping (job control)", signal_name(received.signo));
                ::kill(::getpid(), SIGSTOP);
            } else {
                logger->debug("{} ignored: no command runs", signal_name(received.signo));
            }
        }
    });
    loop.run();
    loop.unwatch(signals.fd());
    logger->info("{} received: removing the tokens file and unloading the tokens",
                 signal_name(stop_signal));
    notify_systemd("STOPPING=1");
    return 0;
}

} // namespace preloadrun::supervisor
