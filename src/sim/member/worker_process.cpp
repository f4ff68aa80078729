#include "member/worker_process.hpp"

#include "member/p11.hpp"
#include "member/worker.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "wire/socket_io.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace preloadrun::sim::member {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.member");
}

// The worker's environment: the service's, with the member's on top.
std::vector<std::string> worker_environment(const WorkerSpec& spec) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string entry(*e);
        auto name = entry.substr(0, entry.find('='));
        bool replaced = false;
        for (const auto& [key, value] : spec.env) {
            replaced = replaced || key == name;
        }
        if (!replaced) {
            env.push_back(std::move(entry));
        }
    }
    for (const auto& [key, value] : spec.env) {
        env.push_back(key + "=" + value);
    }
    return env;
}

// In the child between fork and exec: async-signal-safe calls only.
[[noreturn]] void exec_child(const std::vector<int>& ends, const char* program, char* const* argv,
                             char* const* envp) {
    const int n = static_cast<int>(ends.size());
    int moved[kMaxChannels];
    for (int i = 0; i < n; ++i) {
        moved[i] = ::fcntl(ends[static_cast<std::size_t>(i)], F_DUPFD, kFirstChannelFd + n);
        if (moved[i] < 0) {
            ::_exit(126);
        }
    }
    for (int i = 0; i < n; ++i) {
        if (::dup2(moved[i], kFirstChannelFd + i) < 0) {
            ::_exit(126);
        }
    }
    ::syscall(SYS_close_range, static_cast<unsigned>(kFirstChannelFd + n), ~0U, 0U);
    // What a library prints goes to the service's log, never to its stdout
    // (where the ready line goes); it reads nothing.
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, STDIN_FILENO);
    }
    ::setpgid(0, 0); // a terminal's Ctrl-C is the service's to handle, not its workers'
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program, argv, envp);
    ::_exit(127);
}

} // namespace

Worker::Worker(const WorkerSpec& spec) : member_(spec.member), timeout_(spec.timeout) {
    if (spec.channels < 2 || spec.channels > kMaxChannels) {
        throw Error(ErrorCode::usage, "member " + member_ + ": channels must be 2 to " +
                                          std::to_string(kMaxChannels));
    }
    std::vector<Fd> child_ends;
    for (int i = 0; i < spec.channels; ++i) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
            throw_errno("socketpair", errno);
        }
        channels_.push_back(Channel{Fd(pair[0]), {}});
        child_ends.emplace_back(pair[1]);
    }
    spawn(spec, child_ends);
    child_ends.clear();
    worker::Request init;
    *init.mutable_init() = spec.init;
    auto reply = exchange(channels_[0], init, std::chrono::steady_clock::now() + timeout_);
    if (!reply.function().empty()) {
        kill("it could not start");
        // Whatever the library said, the member is not usable now.
        throw Error(ErrorCode::module_not_usable,
                    error_of(reply.rv(), member_, reply.function(), reply.message()).what());
    }
    token_ = reply.init();
    absent_reason_ = reply.message();
    for (std::size_t i = 0; i + 1 < channels_.size(); ++i) {
        free_.push_back(&channels_[i]); // the last is the slot events'
    }
}

int Worker::events_fd() const noexcept {
    return events_failed_ ? -1 : channels_.back().fd.get();
}

void Worker::ask_slot_event() {
    if (events_failed_ || event_asked_ || dead_.load()) {
        return;
    }
    worker::Request request;
    request.mutable_wait_slot_event();
    const std::string bytes = request.SerializeAsString();
    try {
        hsm::write_frame(
            channels_.back().fd.get(),
            std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
            std::chrono::steady_clock::now() + timeout_);
        event_asked_ = true;
    } catch (const Error& e) {
        kill(std::string("its events channel: ") + e.what());
    }
}

bool Worker::take_slot_event() {
    if (!event_asked_) {
        return false;
    }
    event_asked_ = false;
    auto& channel = channels_.back();
    worker::Reply reply;
    try {
        auto frame = hsm::read_frame(channel.fd.get(), channel.reader,
                                     std::chrono::steady_clock::now() + timeout_);
        if (!reply.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
            throw Error(ErrorCode::protocol, "an unreadable reply");
        }
    } catch (const Error& e) {
        kill(std::string("its events channel: ") + e.what());
        return false;
    }
    if (!reply.function().empty()) {
        events_failed_ = true;
        // Most libraries have no slot events (p11-kit's client, SoftHSM2):
        // only another failure is worth a warning.
        const auto level =
            reply.rv() == CKR_FUNCTION_NOT_SUPPORTED ? spdlog::level::debug : spdlog::level::warn;
        logger()->log(level, "{}; it is probed at intervals instead",
                      error_of(reply.rv(), member_, reply.function(), reply.message()).what());
        return false;
    }
    logger()->debug("member {}: slot event (slot {})", member_, reply.slot_event().slot());
    return true;
}

void Worker::spawn(const WorkerSpec& spec, std::vector<Fd>& child_ends) {
    const auto env = worker_environment(spec);
    std::vector<char*> envp;
    for (const auto& e : env) {
        envp.push_back(const_cast<char*>(e.c_str()));
    }
    envp.push_back(nullptr);
    const std::string channels = std::to_string(spec.channels);
    std::vector<char*> argv{const_cast<char*>(spec.program.c_str()),
                            const_cast<char*>(kWorkerCommand), const_cast<char*>(channels.c_str()),
                            nullptr};
    std::vector<int> ends;
    for (const auto& fd : child_ends) {
        ends.push_back(fd.get());
    }
    pid_ = ::fork();
    if (pid_ < 0) {
        throw_errno("fork", errno);
    }
    if (pid_ == 0) {
        exec_child(ends, spec.program.c_str(), argv.data(), envp.data());
    }
    pidfd_ = Fd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
    if (!pidfd_) {
        int err = errno;
        kill("pidfd_open failed");
        throw_errno("pidfd_open", err);
    }
    logger()->debug("member {}: worker {} started", member_, pid_);
}

Worker::~Worker() {
    kill("");
    if (pid_ > 0) {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

void Worker::kill(const std::string& why) {
    if (pid_ > 0 && !dead_.exchange(true)) {
        ::kill(pid_, SIGKILL);
        if (!why.empty()) {
            logger()->warn("member {}: worker {} killed: {}", member_, pid_, why);
        }
    }
    free_cv_.notify_all();
}

Worker::Channel* Worker::acquire(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    if (!free_cv_.wait_until(lock, deadline, [&] { return dead_.load() || !free_.empty(); })) {
        // Busy, not hung: a call that overruns its own deadline is what
        // kills the worker. Another member may serve this one.
        throw Error(ErrorCode::transient, "member " + member_ + ": every session was busy for " +
                                              std::to_string(timeout_.count()) + " ms");
    }
    if (dead_.load()) {
        throw Error(ErrorCode::module_not_usable, "member " + member_ + ": its worker has ended");
    }
    auto* channel = free_.back();
    free_.pop_back();
    return channel;
}

void Worker::release(Channel* channel) {
    {
        std::lock_guard lock(mutex_);
        free_.push_back(channel);
    }
    free_cv_.notify_one();
}

worker::Reply Worker::exchange(Channel& channel, const worker::Request& request,
                               std::chrono::steady_clock::time_point deadline) {
    std::string bytes = request.SerializeAsString();
    worker::Reply reply;
    try {
        hsm::write_frame(
            channel.fd.get(),
            std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()), deadline);
        secure_wipe(bytes.data(), bytes.size());
        auto frame = hsm::read_frame(channel.fd.get(), channel.reader, deadline);
        if (!reply.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
            throw Error(ErrorCode::protocol, "an unreadable reply");
        }
    } catch (const Error& e) {
        secure_wipe(bytes.data(), bytes.size());
        const bool timed_out = e.code() == ErrorCode::timeout;
        kill(timed_out ? "no answer within " + std::to_string(timeout_.count()) + " ms"
                       : std::string(e.what()));
        throw Error(
            ErrorCode::module_not_usable,
            "member " + member_ + ": " +
                (timed_out ? "its library did not answer in time" : "its worker has ended"));
    }
    return reply;
}

worker::Reply Worker::call(const worker::Request& request) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    auto* channel = acquire(deadline);
    try {
        auto reply = exchange(*channel, request, deadline);
        release(channel);
        return reply;
    } catch (...) {
        release(channel);
        throw;
    }
}

} // namespace preloadrun::sim::member
