// The monitor thread of a member (member_module.hpp): it starts the worker,
// starts a new one when the token went away, probes it while it is up, logs
// out when nothing is loaded, and reports the member failed and restored.

#include "member/member_module.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <poll.h>
#include <unistd.h>

namespace preloadrun::sim::member {

namespace {

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

bool MemberModule::wait(int fd, std::chrono::milliseconds timeout) {
    pollfd pfds[2] = {{wakeup_.get(), POLLIN, 0}, {fd, POLLIN, 0}};
    const int n = ::poll(pfds, fd >= 0 ? 2 : 1, static_cast<int>(timeout.count()));
    if (n > 0 && pfds[0].revents != 0) {
        std::uint64_t count = 0;
        [[maybe_unused]] auto r = ::read(wakeup_.get(), &count, sizeof count);
    }
    return n > 0 && fd >= 0 && pfds[1].revents != 0;
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

bool MemberModule::start_worker() {
    WorkerSpec spec;
    {
        std::lock_guard lock(mutex_);
        spec.member = esn_;
        spec.program = context_.program;
        spec.init = init_of(config_);
        spec.env = config_.env;
        spec.channels = config_.max_sessions + 1; // one more for the monitor's probes
        spec.timeout = config_.timeout;
    }
    auto worker = std::make_shared<Worker>(spec);
    refresh_keys(*worker); // what it shows before a login
    bool restore = false;
    {
        std::lock_guard lock(mutex_);
        worker_ = worker;
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
    return true;
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
            wait(-1, std::chrono::milliseconds(-1));
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
            try {
                start_worker();
                last_error.clear();
            } catch (const std::exception& e) {
                if (e.what() != last_error) {
                    logger()->warn("member {}: {}; trying again every {} ms", esn_, e.what(),
                                   interval.count());
                    last_error = e.what();
                }
                report_down(e.what());
                tried();
                wait(-1, interval);
                continue;
            }
            tried();
            continue;
        }
        if (wait(worker->exit_fd(), interval)) {
            worker->kill(""); // it ended on its own: mark it dead
            continue;
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
