// The monitor thread of a member (member_module.hpp): it starts the worker,
// starts a new one when the token went away, probes it while it is up, logs
// out when nothing is loaded, and reports the member failed and restored.

#include "member/mechanism.hpp"
#include "member/member_module.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <poll.h>
#include <unistd.h>

namespace preloadrun::sim::member {

namespace {

constexpr std::chrono::milliseconds kMinRestart{50};

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.member");
}

worker::Init init_of(const MemberConfig& config) {
    worker::Init init;
    init.set_library(config.library);
    auto* token = init.mutable_token();
    token->set_label(config.token.label);
    token->set_serial(config.token.serial);
    if (config.token.slot) {
        token->set_has_slot(true);
        token->set_slot(*config.token.slot);
    }
    return init;
}

} // namespace

// ---- the monitor ----

void MemberModule::tried() {
    {
        std::lock_guard lock(mutex_);
        tried_ = true;
    }
    tried_cv_.notify_all();
}

void MemberModule::wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wakeup_.get(), &one, sizeof one);
}

int MemberModule::wait(std::initializer_list<int> fds, std::chrono::milliseconds timeout) {
    pollfd pfds[3] = {{wakeup_.get(), POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
    nfds_t n = 1;
    for (int fd : fds) {
        if (n < 3) {
            pfds[n++].fd = fd; // poll skips a negative fd
        }
    }
    const int ready = ::poll(pfds, n, static_cast<int>(timeout.count()));
    if (ready > 0 && pfds[0].revents != 0) {
        std::uint64_t count = 0;
        [[maybe_unused]] auto r = ::read(wakeup_.get(), &count, sizeof count);
    }
    for (nfds_t i = 1; ready > 0 && i < n; ++i) {
        if (pfds[i].fd >= 0 && pfds[i].revents != 0) {
            return static_cast<int>(i - 1);
        }
    }
    return -1;
}

void MemberModule::wait_until(std::chrono::steady_clock::time_point when) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        when - std::chrono::steady_clock::now());
    if (left.count() > 0) {
        wait({}, left);
    }
}

void MemberModule::report(hsm::ModuleAction action, const std::string& why) {
    {
        std::lock_guard lock(mutex_);
        self_report_ = true;
    }
    report_(action, "member " + esn_ + ": " + why);
    std::lock_guard lock(mutex_);
    self_report_ = false;
}

void MemberModule::report_down(const std::string& why) {
    {
        std::lock_guard lock(mutex_);
        if (down_ || stopping_) {
            return;
        }
        down_ = true;
        logged_in_ = false;
        pin_digest_.reset();
    }
    report(hsm::ModuleAction::fail, why);
}

void MemberModule::start_worker(std::shared_ptr<Worker>& watcher) {
    WorkerSpec spec;
    {
        std::lock_guard lock(mutex_);
        spec.member = esn_;
        spec.program = context_.program;
        spec.init = init_of(config_);
        spec.init.set_watch_if_absent(true);
        spec.env = config_.env;
        // Two more: the monitor's probes, and the slot events.
        spec.channels = config_.max_sessions + 2;
        spec.timeout = config_.timeout;
    }
    auto worker = std::make_shared<Worker>(spec);
    if (worker->token_absent()) {
        watcher = worker;
        throw Error(ErrorCode::module_not_usable,
                    "member " + esn_ + ": " + worker->absent_reason());
    }
    refresh_keys(*worker); // what it shows before a login
    bool restore = false;
    {
        std::lock_guard lock(mutex_);
        worker_ = worker;
        const auto& offered = worker->token().mechanisms();
        lacks_ = lacked_kinds(std::span(offered.data(), static_cast<std::size_t>(offered.size())));
        logged_in_ = false;
        logout_wanted_ = false;
        pin_digest_.reset();
        // Back after it failed on its own; one the admin failed stays failed.
        restore = down_ && !failed_by_admin_;
        down_ = false;
    }
    logger()->info("member {}: token \"{}\" (serial {}) of {} answers (worker {})", esn_,
                   worker->token().label(), worker->token().serial(),
                   worker->token().library_description(), worker->pid());
    if (restore) {
        report(hsm::ModuleAction::restore, "its token answers again");
    }
}

void MemberModule::probe(const std::shared_ptr<Worker>& worker) {
    bool logged_in = false;
    bool logout = false;
    {
        std::lock_guard lock(mutex_);
        logged_in = logged_in_;
        logout = logout_wanted_;
    }
    try {
        if (logout) {
            std::lock_guard serial(login_mutex_);
            {
                // A login may have come first, or a token been loaded since:
                // neither is undone.
                std::lock_guard lock(mutex_);
                if (!logout_wanted_ || objects_.holds_token()) {
                    logout_wanted_ = false;
                    return;
                }
            }
            worker::Request request;
            request.mutable_logout();
            call(*worker, request);
            std::lock_guard lock(mutex_);
            if (logout_wanted_) {
                logged_in_ = false;
                logout_wanted_ = false;
                pin_digest_.reset();
            }
            return;
        }
        worker::Request request;
        request.mutable_probe();
        auto reply = call(*worker, request);
        if (logged_in && !reply.probe().logged_in()) {
            worker->kill("its token was logged out (was it reset?)");
        }
    } catch (const Error&) {
        // The worker was killed: the loop sees it.
    }
}

void MemberModule::monitor() {
    std::string last_error;
    std::chrono::steady_clock::time_point last_event{};
    for (;;) {
        std::shared_ptr<Worker> worker;
        std::chrono::milliseconds interval{};
        bool removed = false;
        bool restart = false;
        {
            std::lock_guard lock(mutex_);
            if (stopping_) {
                return;
            }
            worker = worker_;
            interval = config_.probe_interval;
            removed = state_ == hsm::ModuleState::removed;
            restart = std::exchange(restart_wanted_, false);
        }
        if (removed || restart) {
            if (worker) {
                worker->kill(restart ? "its configuration changed" : "");
                std::lock_guard lock(mutex_);
                worker_.reset();
            }
            if (restart && !removed) {
                report_down("its configuration changed");
                continue;
            }
            wait({}, std::chrono::milliseconds(-1));
            continue;
        }
        if (!worker || !worker->alive()) {
            if (worker) {
                {
                    std::lock_guard lock(mutex_);
                    worker_.reset();
                }
                worker.reset();
                report_down("its token went away or did not answer");
            }
            std::shared_ptr<Worker> watcher;
            const auto started = std::chrono::steady_clock::now();
            try {
                start_worker(watcher);
                last_error.clear();
            } catch (const std::exception& e) {
                // What the worker says names the member already.
                std::string why = e.what();
                if (const auto prefix = "member " + esn_ + ": "; why.rfind(prefix, 0) == 0) {
                    why.erase(0, prefix.size());
                }
                if (why != last_error) {
                    logger()->warn("member {}: {}; trying again {}", esn_, why,
                                   watcher ? "at its library's slot event, or in " +
                                                 std::to_string(interval.count()) + " ms"
                                           : "every " + std::to_string(interval.count()) + " ms");
                    last_error = why;
                }
                report_down(why);
                tried();
                if (watcher) {
                    watcher->ask_slot_event();
                    const int ready = wait({watcher->exit_fd(), watcher->events_fd()}, interval);
                    // After an event, a new worker looks for the token at
                    // once (but a library that reports events without end
                    // does not start one more than every 50 ms); after
                    // anything else, at the interval.
                    const bool event = ready == 1 && watcher->take_slot_event();
                    if (ready >= 0) {
                        wait_until(started + (event ? kMinRestart : interval));
                    }
                    watcher.reset();
                } else {
                    wait({}, interval);
                }
                continue;
            }
            tried();
            continue;
        }
        // The slot events, where the library reports them: one makes the
        // probe come now rather than at the interval.
        worker->ask_slot_event();
        const int ready = wait({worker->exit_fd(), worker->events_fd()}, interval);
        if (ready == 0) {
            worker->kill(""); // it ended on its own: mark it dead
            continue;
        }
        if (ready == 1 && worker->take_slot_event()) {
            // A library that reports events without end does not make the
            // member probed more than every 50 ms.
            const auto now = std::chrono::steady_clock::now();
            if (now - last_event < kMinRestart) {
                wait_until(last_event + kMinRestart);
            }
            last_event = now;
        }
        probe(worker);
    }
}

// ---- the factory ----

void MemberModules::set_config(const FleetConfig& config) {
    std::lock_guard lock(mutex_);
    config_ = config;
}

ModuleFactory MemberModules::factory() {
    return [this](ModuleStart start) -> std::unique_ptr<Module> {
        std::lock_guard lock(mutex_);
        const auto* member = config_.member(start.esn);
        if (member == nullptr) {
            throw Error(ErrorCode::internal, "no member " + start.esn + " in the configuration");
        }
        const auto* set = config_.set_of(start.esn);
        return std::make_unique<MemberModule>(std::move(start), *member,
                                              set != nullptr ? set->name : std::string(), context_);
    };
}

} // namespace preloadrun::sim::member
