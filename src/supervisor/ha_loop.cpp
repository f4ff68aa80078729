#include "ha_loop.hpp"

#include "preloadrun/common/log.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <thread>

namespace preloadrun::supervisor {

namespace {
auto logger() {
    return log::get("ha");
}
} // namespace

// Worker threads post through this; the loop closes it when it goes away, so
// a load that finishes after preloadrun decided to exit is dropped instead of
// touching freed state.
struct HaLoop::Channel {
    std::mutex mutex;
    Wakeup* wakeup = nullptr;

    void post(EventLoop::Callback fn) {
        std::lock_guard lock(mutex);
        if (wakeup != nullptr) {
            wakeup->post(std::move(fn));
        }
    }
};

HaLoop::Seams HaLoop::service_seams(hsm::Endpoint endpoint) {
    Seams seams;
    seams.subscribe = [endpoint = std::move(endpoint)] { return hsm::subscribe(endpoint); };
    seams.background = [](std::function<void()> job) { std::thread(std::move(job)).detach(); };
    return seams;
}

HaLoop::HaLoop(EventLoop& loop, Seams seams, FleetState& fleet,
               std::shared_ptr<const Loader> loader, std::function<void()> publish,
               std::chrono::milliseconds retry_window)
    : loop_(loop), seams_(std::move(seams)), fleet_(fleet), loader_(std::move(loader)),
      publish_(std::move(publish)), retries_(loop.clock(), retry_window),
      wakeup_(std::make_unique<Wakeup>(loop)), channel_(std::make_shared<Channel>()) {
    channel_->wakeup = wakeup_.get();
}

HaLoop::~HaLoop() {
    {
        std::lock_guard lock(channel_->mutex);
        channel_->wakeup = nullptr;
    }
    if (stream_) {
        loop_.unwatch(stream_->fd());
    }
    for (const auto& [module, timer] : retry_timers_) {
        loop_.cancel(timer);
    }
}

void HaLoop::start() {
    subscribe_now();
}

void HaLoop::subscribe_now() {
    stream_ = seams_.subscribe();
    loop_.watch(stream_->fd(), [this] { on_stream_readable(); });
    const bool restarted = fleet_.set_service_instance(stream_->instance());
    if (restarted) {
        logger()->warn("the HSM service restarted since the tokens were loaded: loading them "
                       "onto every module again");
        ++epoch_;
        publish_(); // the handles of the file are gone with the old instance
    }
    for (const auto& module : stream_->snapshot()) {
        on_module(module, restarted);
    }
}

void HaLoop::on_stream_readable() {
    try {
        while (auto event = stream_->next(std::chrono::milliseconds(0))) {
            logger()->debug("module {}: {} (generation {}) -> {} (generation {})",
                            event->module.number, hsm::to_string(event->previous_state),
                            event->previous_generation, hsm::to_string(event->module.state),
                            event->module.generation);
            on_module(event->module, false);
        }
    } catch (const Error& e) {
        connection_lost(e.what());
    }
}

void HaLoop::on_module(const hsm::ModuleInfo& info, bool force_reload) {
    if (!fleet_.admit(info)) {
        return;
    }
    const auto& modules = fleet_.modules();
    auto known = modules.find(info.number);
    bool is_new = known == modules.end();
    auto before = is_new ? hsm::ModuleInfo{} : known->second.info;
    bool had_handles = !is_new && !known->second.handles.empty();

    if (force_reload) {
        fleet_.forget_handles(info.number);
    }
    fleet_.update_module(info);
    const auto& now = fleet_.modules().at(info.number);
    bool current = now.loaded && now.loaded_generation == info.generation;
    bool changed = is_new || force_reload || before.state != info.state ||
                   before.generation != info.generation;
    if (changed) {
        // A clear, a failure, a restore: whatever went wrong before is history.
        retries_.clear(info.number);
        if (auto timer = retry_timers_.find(info.number); timer != retry_timers_.end()) {
            loop_.cancel(timer->second);
            retry_timers_.erase(timer);
        }
        fleet_.set_given_up(info.number, false);
    }
    if (is_new) {
        logger()->info("module {} (ESN {}) joined the fleet ({})", info.number, info.esn,
                       hsm::to_string(info.state));
    }
    if (info.state != hsm::ModuleState::usable) {
        if (changed) {
            if (had_handles) {
                logger()->info("module {} is {}: its tokens are gone from it", info.number,
                               hsm::to_string(info.state));
            }
            publish_();
        }
        return;
    }
    if (!current && !now.given_up) {
        schedule_load(info.number);
    }
    if (changed) {
        publish_();
    }
}

void HaLoop::schedule_load(std::uint32_t module) {
    const auto& state = fleet_.modules().at(module);
    auto generation = state.info.generation;
    auto key = std::make_pair(epoch_, generation);
    auto in_flight = loading_.find(module);
    if (in_flight != loading_.end() && in_flight->second == key) {
        return; // already loading this generation
    }
    loading_[module] = key;
    seams_.background(
        [channel = channel_, loader = loader_, module, generation, epoch = epoch_, this] {
            auto result = loader->load_module(module);
            channel->post([this, result = std::move(result), generation, epoch]() mutable {
                on_loaded(std::move(result), generation, epoch);
            });
        });
}

void HaLoop::on_loaded(ModuleLoad result, std::uint64_t generation, std::uint64_t epoch) {
    auto module = result.module;
    if (auto it = loading_.find(module);
        it != loading_.end() && it->second == std::make_pair(epoch, generation)) {
        loading_.erase(it);
    }
    const auto& modules = fleet_.modules();
    auto state = modules.find(module);
    bool stale = epoch != epoch_ || !result.of_service(fleet_.service_instance()) ||
                 state == modules.end() || state->second.info.generation != generation ||
                 state->second.info.state != hsm::ModuleState::usable;
    if (stale) {
        // The module changed while we loaded (or the service restarted): those
        // handles died with it, or are about to. The event that told us has
        // scheduled what is needed.
        if (!result.handles.empty() && result.instance == fleet_.service_instance()) {
            seams_.background([loader = loader_, module, handles = result.handles] {
                loader->unload({{module, handles}});
            });
        }
        return;
    }
    if (result.error) {
        retry_later(module, *result.error);
        return;
    }
    retries_.clear(module);
    fleet_.set_loaded(module, result.handles, unix_time_ms());
    logger()->info("module {}: {} token(s) loaded in {} ms (generation {})", module,
                   result.handles.size(), result.took.count(), generation);
    publish_();
}

void HaLoop::retry_later(std::uint32_t module, const Error& error) {
    if (error.code() == ErrorCode::not_found && error.origin() == Origin::peer) {
        // The module does not hold the token (a real HSM of another token
        // set): trying again changes nothing until the module changes.
        logger()->info("module {}: {}; not tried again until it is cleared or restored", module,
                       error.what());
        fleet_.set_given_up(module, true);
        publish_();
        return;
    }
    const auto delay = retries_.failed(module);
    if (!delay) {
        logger()->error("module {}: giving up loading the tokens after {} attempts over {} ms: "
                        "{}; it is tried again when it is cleared or restored",
                        module, retries_.failures(module), retries_.window().count(), error.what());
        fleet_.set_given_up(module, true);
        publish_();
        return;
    }
    logger()->debug("module {}: load failed ({}), retrying in {} ms", module, error.what(),
                    delay->count());
    retry_timers_[module] = loop_.after(*delay, [this, module] {
        retry_timers_.erase(module);
        const auto& modules = fleet_.modules();
        auto state = modules.find(module);
        if (state != modules.end() && state->second.info.state == hsm::ModuleState::usable) {
            schedule_load(module);
        }
    });
}

void HaLoop::connection_lost(const std::string& why) {
    if (stream_) {
        loop_.unwatch(stream_->fd());
        stream_.reset();
    }
    logger()->warn("lost the HSM service's events ({}); reconnecting", why);
    reconnect_delay_ = RetryWindows::kFirstDelay;
    reconnect();
}

void HaLoop::reconnect() {
    if (reconnecting_) {
        return;
    }
    reconnecting_ = true;
    loop_.after(reconnect_delay_, [this] {
        seams_.background([channel = channel_, subscribe = seams_.subscribe, this] {
            auto stream = std::make_shared<std::unique_ptr<hsm::EventStream>>();
            std::string error;
            try {
                *stream = subscribe();
            } catch (const std::exception& e) {
                error = e.what();
            }
            channel->post([this, stream, error] { on_reconnected(std::move(*stream), error); });
        });
    });
}

void HaLoop::on_reconnected(std::unique_ptr<hsm::EventStream> stream, const std::string& error) {
    reconnecting_ = false;
    if (!stream) {
        // Connecting to a local socket costs little: try at least every
        // second, so that a restarted service is found soon.
        reconnect_delay_ = std::min(reconnect_delay_ * 2, std::chrono::milliseconds(1000));
        logger()->debug("reconnecting failed ({}); next try in {} ms", error,
                        reconnect_delay_.count());
        reconnect();
        return;
    }
    stream_ = std::move(stream);
    loop_.watch(stream_->fd(), [this] { on_stream_readable(); });
    const bool restarted = fleet_.set_service_instance(stream_->instance());
    if (restarted) {
        // A new instance of the service: no handle of the old one means
        // anything, whatever its number; every module is new to us.
        logger()->info("reconnected to the HSM service, which restarted: loading the tokens "
                       "onto every module again");
        ++epoch_;
        loading_.clear();
        publish_();
    } else {
        logger()->info("reconnected to the HSM service (the same instance: what is loaded "
                       "stays)");
    }
    for (const auto& module : stream_->snapshot()) {
        on_module(module, restarted);
    }
}

} // namespace preloadrun::supervisor
