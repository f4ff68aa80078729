#pragma once
// The service's side of a member's worker (worker.hpp): the process started
// with its channels, and one request at a time per channel, each bounded by
// the member's timeout. A worker that does not answer in time, closes a
// channel or dies is killed: everything it held on the token (sessions,
// login) goes with it, and calls fail with Error(module_not_usable).

#include "preloadrun/common/fd.hpp"
#include "wire/frame.hpp"
#include "worker.pb.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace preloadrun::sim::member {

struct WorkerSpec {
    std::string member;  // its name, for messages
    std::string program; // the service's own program (it runs the worker)
    worker::Init init;   // the library and the token
    std::vector<std::pair<std::string, std::string>> env; // set for the library
    int channels = 4; // 2..kMaxChannels: sessions, and the last for slot events
    std::chrono::milliseconds timeout{5000}; // of every call, and of starting
};

class Worker {
public:
    // Starts the process and initialises the library (C_Initialize, finding
    // the token). Throws Error(module_not_usable) saying why it cannot.
    explicit Worker(const WorkerSpec& spec);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    // Kills the process (if it still runs) and reaps it.
    ~Worker();

    const worker::InitReply& token() const noexcept { return token_; }
    pid_t pid() const noexcept { return pid_; }
    // Readable once the process has ended (a pidfd).
    int exit_fd() const noexcept { return pidfd_.get(); }
    bool alive() const noexcept { return !dead_.load(); }

    // Sends `request` on a free channel and returns the reply, whether the
    // call succeeded or failed on the token (Reply::function set). Throws
    // Error(module_not_usable) when the worker is dead, or does not answer
    // within the timeout (it is killed then).
    worker::Reply call(const worker::Request& request);
    // Kills the process (idempotent). `why`: for the log.
    void kill(const std::string& why);

    // The token was not there, and the library reports slot events
    // (WorkerSpec::init.watch_if_absent): why, as the library's search said.
    bool token_absent() const noexcept { return token_.token_absent(); }
    const std::string& absent_reason() const noexcept { return absent_reason_; }

    // Slot events, for one thread only (the member's monitor).
    // ask_slot_event() puts a C_WaitForSlotEvent on the events channel (once
    // until its answer is taken); events_fd() is readable when it is
    // answered (-1 once the library said it cannot), and take_slot_event()
    // reads the answer: true for an event, false when the library could not
    // wait (it is not asked again) or the worker ended. A library whose wait
    // never returns costs a thread of the worker, nothing more.
    void ask_slot_event();
    int events_fd() const noexcept;
    bool take_slot_event();

private:
    struct Channel {
        Fd fd;
        hsm::FrameReader reader;
    };
    Channel* acquire(std::chrono::steady_clock::time_point deadline);
    void release(Channel* channel);
    worker::Reply exchange(Channel& channel, const worker::Request& request,
                           std::chrono::steady_clock::time_point deadline);
    void spawn(const WorkerSpec& spec, std::vector<Fd>& child_ends);

    const std::string member_;
    const std::chrono::milliseconds timeout_;
    pid_t pid_ = -1;
    Fd pidfd_;
    std::vector<Channel> channels_;
    std::mutex mutex_;
    std::condition_variable free_cv_;
    std::vector<Channel*> free_;
    std::atomic<bool> dead_{false};
    worker::InitReply token_;
    std::string absent_reason_;
    bool event_asked_ = false;   // the monitor's
    bool events_failed_ = false; // the monitor's
};

} // namespace preloadrun::sim::member
