#include "member/members.hpp"

#include "model/keywrap.hpp"
#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace preloadrun::sim::member {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.member");
}

constexpr std::size_t kDigestKeySize = 32;
// Changes to the file this close together are read once.
constexpr std::chrono::milliseconds kSettle{200};

// The fleet's id: the configuration file's absolute path, digested.
Bytes fleet_id(const std::filesystem::path& path) {
    const auto text = "preloadrun member fleet\n" + std::filesystem::absolute(path).string();
    Bytes out(SHA_DIGEST_LENGTH);
    SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out.data());
    return out;
}

std::chrono::milliseconds longest_timeout(const FleetConfig& config) {
    std::chrono::milliseconds longest{0};
    for (const auto& m : config.members) {
        longest = std::max(longest, m.timeout);
    }
    return longest;
}

} // namespace

MemberFleet::MemberFleet(std::filesystem::path config, const FleetOptions& options,
                         std::string program)
    : path_(std::filesystem::absolute(config)), program_(std::move(program)),
      config_(load_fleet_config(path_)), catalog_(fleet_id(path_)), limiter_(steady_clock()),
      digest_key_(random_secret(kDigestKeySize)),
      modules_(MemberContext{catalog_, limiter_, digest_key_, program_}) {
    if (config_.members.size() > kMaxModules) {
        throw Error(ErrorCode::usage,
                    path_.string() + ": at most " + std::to_string(kMaxModules) + " members");
    }
    catalog_.set_sets(config_.sets);
    modules_.set_config(config_);
    for (const auto& m : config_.members) {
        numbers_[m.name] = store_.enrol_module(m.name).number;
    }
    fleet_ = std::make_unique<Fleet>(store_, options, modules_.factory());
    for (const auto& [name, number] : numbers_) {
        member_module(number).start();
    }
    const auto deadline =
        std::chrono::steady_clock::now() + longest_timeout(config_) + std::chrono::seconds(1);
    for (const auto& [name, number] : numbers_) {
        if (!member_module(number).wait_first_try(deadline)) {
            logger()->warn("member {}: no answer yet; serving without it for now", name);
        }
    }
    inotify_ = Fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    stop_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!inotify_ || !stop_) {
        throw_errno("inotify");
    }
    if (::inotify_add_watch(inotify_.get(), path_.parent_path().c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB) < 0) {
        logger()->warn("cannot watch {} for changes ({}): re-read it with SIGHUP",
                       path_.parent_path().string(), std::strerror(errno));
    }
    watcher_ = std::thread([this] { watch(); });
}

MemberFleet::~MemberFleet() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    if (watcher_.joinable()) {
        watcher_.join();
    }
    fleet_.reset(); // the modules (and their workers) go first
}

MemberModule& MemberFleet::member_module(std::uint32_t number) {
    return dynamic_cast<MemberModule&>(fleet_->module(number));
}

bool MemberFleet::reload() {
    std::lock_guard lock(reload_mutex_);
    FleetConfig config;
    try {
        config = load_fleet_config(path_);
    } catch (const std::exception& e) {
        logger()->error("not re-read: {}; the fleet stays as it was", e.what());
        return false;
    }
    if (config.members == config_.members && config.sets == config_.sets) {
        return true;
    }
    apply(config);
    config_ = std::move(config);
    return true;
}

void MemberFleet::apply(const FleetConfig& config) {
    catalog_.set_sets(config.sets);
    modules_.set_config(config);
    for (const auto& m : config.members) {
        const auto* set = config.set_of(m.name);
        const std::string set_name = set != nullptr ? set->name : std::string();
        auto it = numbers_.find(m.name);
        if (it == numbers_.end()) {
            try {
                auto info = fleet_->add(m.name);
                numbers_[m.name] = info.number;
                member_module(info.number).start();
                logger()->info("member {} joins as module {}", m.name, info.number);
            } catch (const Error& e) {
                logger()->error("member {} cannot join: {}", m.name, e.what());
            }
            continue;
        }
        auto& module = member_module(it->second);
        module.reconfigure(m, set_name);
        if (module.state() == hsm::ModuleState::removed) {
            fleet_->control(it->second, hsm::ModuleAction::restore);
            logger()->info("member {} is back as module {}", m.name, it->second);
        }
    }
    for (const auto& [name, number] : numbers_) {
        if (config.member(name) == nullptr &&
            member_module(number).state() != hsm::ModuleState::removed) {
            fleet_->control(number, hsm::ModuleAction::remove);
            logger()->info("member {} (module {}) is removed: it left the configuration", name,
                           number);
        }
    }
}

void MemberFleet::watch() {
    const auto name = path_.filename().string();
    for (;;) {
        pollfd pfds[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        if (::poll(pfds, 2, -1) < 0 && errno != EINTR) {
            return;
        }
        if (pfds[1].revents != 0) {
            return;
        }
        bool ours = false;
        alignas(inotify_event) char buffer[4096];
        for (;;) {
            auto n = ::read(inotify_.get(), buffer, sizeof buffer);
            if (n <= 0) {
                break;
            }
            for (char* p = buffer; p < buffer + n;) {
                auto* event = reinterpret_cast<inotify_event*>(p);
                ours = ours || (event->len > 0 && name == event->name);
                p += sizeof(inotify_event) + event->len;
            }
        }
        if (ours) {
            // Let a writer finish before reading.
            pollfd stop{stop_.get(), POLLIN, 0};
            if (::poll(&stop, 1, static_cast<int>(kSettle.count())) > 0) {
                return;
            }
            char drain[4096];
            while (::read(inotify_.get(), drain, sizeof drain) > 0) {
            }
            logger()->info("{} changed: re-reading it", path_.string());
            reload();
        }
    }
}

} // namespace preloadrun::sim::member
