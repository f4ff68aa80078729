#include "reloader.hpp"

#include "log.hpp"
#include "preloadrun/tokens/liveness.hpp"

#include <set>
#include <unistd.h>

namespace preloadrun::pkcs11 {

Reloader::Reloader(std::filesystem::path file, Parts parts, const Clock& clock,
                   std::chrono::milliseconds retry_window, std::unique_ptr<ChangeCount> changes,
                   tokens::FileVersion initial_file)
    : file_(std::move(file)), parts_(parts), changes_(std::move(changes)),
      retries_(clock, retry_window), file_version_(std::move(initial_file)),
      epoch_(parts.router.pool().epoch()), clock_(clock) {
    seen_.store(current_version(), std::memory_order_relaxed);
}

void forget_service_instance(Group& group, Slots& slots, ObjectStore& objects,
                             const std::vector<hsm::ModuleInfo>& modules) {
    for (const auto& key : objects.keys()) {
        if (hsm::is_object(key->info.type)) {
            continue; // on no HSM
        }
        if (key->session) {
            key->mark_lost(); // it lived in the old instance only
            continue;
        }
        for (const auto& record : group.records()) {
            key->forget(record.number);
        }
    }
    for (CK_SLOT_ID s = 1; s < slots.count(); ++s) {
        for (const auto& [module, handle] : slots.handles(s)) {
            slots.forget_handle(s, module);
        }
    }
    for (const auto& m : modules) {
        if (group.track(m.number, m.esn, m.generation)) {
            group.set_generation(m.number, m.generation);
            group.leave(m.number, "the HSM service restarted");
        }
    }
    for (const auto& record : group.records()) {
        group.leave(record.number, "the HSM service restarted");
    }
}

void Reloader::update_pending() noexcept {
    pending_.store(!retries_.empty() || reread_pending_, std::memory_order_relaxed);
}

void Reloader::service_restarted(const std::vector<hsm::ModuleInfo>& modules, std::uint64_t epoch) {
    std::lock_guard lock(mutex_);
    epoch_ = epoch;
    forget_service_instance(parts_.group, parts_.slots, parts_.objects, modules);
    for (const auto& m : modules) {
        retries_.clear(m.number);
    }
    retry_reason_.clear();
    file_unusable_.clear();
    for (const auto& m : modules) {
        if (m.state == hsm::ModuleState::usable && parts_.group.record(m.number)) {
            reload_module(m.number, "the HSM service restarted");
        }
    }
    // The tokens file may name the new instance already.
    file_version_ = {};
    reread_pending_ = false;
    try {
        reread();
    } catch (const std::exception& e) {
        logger().error("reloading keys from {} failed: {}", file_.string(), e.what());
    }
    update_pending();
}

bool Reloader::same_instance(const tokens::TokensFile& file) {
    auto& pool = parts_.router.pool();
    auto now_instance = to_hex(pool.instance());
    if (file.service_instance != now_instance) {
        // Written for an instance this process has not met yet? Ask the
        // service (a new connection tells its instance).
        try {
            pool.fresh();
        } catch (const Error& e) {
            logger().debug("cannot reach the HSM service: {}", e.what());
        }
        now_instance = to_hex(pool.instance());
    }
    if (file.service_instance == now_instance && pool.epoch() == epoch_) {
        other_instance_reported_ = false;
        return true;
    }
    if (file.service_instance == now_instance) {
        // A restart this process has yet to go through (Instance::revalidate):
        // service_restarted() reads the file again.
        return false;
    }
    if (!other_instance_reported_) {
        other_instance_reported_ = true;
        logger().warn("tokens file {} names another instance of the HSM service ({}, this "
                      "process uses {}): written before the service restarted, or by a "
                      "preloadrun that uses another service; its handles are not used until it "
                      "names this one",
                      file_.string(), file.service_instance, now_instance);
    }
    reread_pending_ = true;
    reread_after_ = clock_.now() + std::chrono::milliseconds(50);
    return false;
}

void Reloader::slow_path(std::uint64_t version) {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) {
        return; // another thread is at it; this operation goes on as things are
    }
    try {
        if (version != seen_.load(std::memory_order_relaxed)) {
            seen_.store(version, std::memory_order_relaxed);
            reread_pending_ = false;
            reread();
        } else if (reread_pending_ && clock_.now() >= reread_after_) {
            reread_pending_ = false;
            file_version_ = {};
            reread();
        }
        retry_pending();
    } catch (const std::exception& e) {
        // Reloading must never fail the application's operation.
        logger().error("reloading keys from {} failed: {}", file_.string(), e.what());
    }
}

void Reloader::reread() {
    const auto liveness = tokens::check(file_);
    if (liveness.status != tokens::Status::live) {
        if (liveness.status == tokens::Status::missing && !owner_dead_reported_) {
            // Removed by its owner at exit, or being replaced: reported once.
            owner_dead_reported_ = true;
            logger().warn("tokens file {} is gone ({}); nothing more will be reloaded from it",
                          file_.string(), liveness.reason);
        } else if (!owner_dead_reported_) {
            owner_dead_reported_ = true;
            if (liveness.status == tokens::Status::unknown) {
                logger().warn("tokens file {} cannot be checked: {}; nothing more will be "
                              "reloaded from it",
                              file_.string(), liveness.reason);
            } else {
                logger().warn("tokens file {} is no longer live: {}; nothing more will be "
                              "reloaded from it, and the HSM service unloads the tokens its "
                              "owner loaded (with the keys loaded under them)",
                              file_.string(), liveness.reason);
            }
        }
        return;
    }
    if (auto foreign = tokens::published_by_another_user(liveness, ::geteuid())) {
        if (!owner_dead_reported_) {
            owner_dead_reported_ = true;
            logger().warn("tokens file {} not used: {}", file_.string(), *foreign);
        }
        return;
    }
    if (owner_dead_reported_) {
        owner_dead_reported_ = false;
        logger().info("tokens file {} is live again: {}", file_.string(), liveness.reason);
    }
    const auto version = tokens::version_of(*liveness.file);
    if (version == file_version_) {
        return;
    }
    if (!same_instance(*liveness.file)) {
        return;
    }
    file_version_ = version;
    logger().debug("tokens file {} changed (owner {}, generation {})", file_.string(),
                   version.owner, version.generation);
    apply(*liveness.file);
}

void Reloader::forget_module(std::uint32_t module) {
    for (const auto& key : parts_.objects.keys()) {
        if (key->session) {
            if (key->home_module == module) {
                key->mark_lost();
            }
            continue;
        }
        key->forget(module);
    }
}

void Reloader::apply(const tokens::TokensFile& file) {
    auto& group = parts_.group;
    auto& slots = parts_.slots;
    std::map<std::uint32_t, std::string> to_reload; // module -> why
    std::set<std::uint32_t> unusable;

    for (const auto& fm : file.modules) {
        auto record = group.record(fm.number);
        if (!record) {
            if (!group.track(fm.number, fm.esn, fm.generation)) {
                continue;
            }
            if (fm.state == tokens::ModuleState::usable) {
                to_reload[fm.number] = "new module";
            }
            continue;
        }
        if (record->generation != fm.generation) {
            // Cleared or restored: every handle we had there is dead.
            forget_module(fm.number);
            for (CK_SLOT_ID s = 1; s < slots.count(); ++s) {
                slots.forget_handle(s, fm.number);
            }
            group.set_generation(fm.number, fm.generation);
            group.leave(fm.number, "module generation changed to " + std::to_string(fm.generation) +
                                       " (cleared or restored)");
            parts_.router.pool().module_left(); // cleared: operations with no module wait
            if (fm.state == tokens::ModuleState::usable) {
                to_reload[fm.number] =
                    "module usable again (generation " + std::to_string(fm.generation) + ")";
            }
        }
        if (fm.state != tokens::ModuleState::usable) {
            unusable.insert(fm.number);
            file_unusable_.insert(fm.number);
        } else if (file_unusable_.erase(fm.number) != 0 && !to_reload.count(fm.number)) {
            to_reload[fm.number] = "module usable again";
        }
    }

    // The handles of the modules as they are now (tracked, generations set
    // above), in the instance this process uses.
    const auto current =
        tokens::current_handles(file, to_hex(parts_.router.pool().instance()), group.generations());
    for (const auto& token : current) {
        const auto slot = slots.slot_of_token_hex(token.hash);
        if (!slot) {
            continue;
        }
        slots.set_preloaded(*slot, true);
        for (const auto& loaded : token.loaded) {
            const TokenHandle fresh{loaded.handle, loaded.module_generation};
            const auto have = slots.handle(*slot, loaded.module);
            if (have && *have == fresh) {
                continue;
            }
            slots.set_handle(*slot, loaded.module, fresh);
            for (const auto& key : parts_.objects.keys()) {
                if (!key->session && key->slot == *slot) {
                    key->forget(loaded.module);
                }
            }
            if (!unusable.count(loaded.module) && !to_reload.count(loaded.module)) {
                to_reload[loaded.module] = "token '" + token.name + "' reloaded on it (handle " +
                                           std::to_string(loaded.handle) + ")";
            }
        }
    }

    for (std::uint32_t m : unusable) {
        if (group.is_member(m)) {
            parts_.router.pool().module_left(); // operations with no module wait for it
        }
        group.leave(m, "the tokens file says it is not usable");
    }
    for (const auto& [module, why] : to_reload) {
        retries_.clear(module);
        reload_module(module, why);
    }
    update_pending();
}

void Reloader::reload_module(std::uint32_t module, const std::string& why) {
    auto& router = parts_.router;
    std::size_t reloaded = 0;
    std::size_t waiting = 0; // keys whose token is not (yet) loaded on this module
    try {
        std::vector<std::shared_ptr<KeyObject>> batch;
        for (const auto& key : parts_.objects.keys()) {
            // Keys in use: loaded on some module before. Others load lazily.
            if (key->session || key->lost() || key->handle_on(module) || !key->in_use()) {
                continue;
            }
            if (key->info.token && !parts_.slots.handle(key->slot, module)) {
                ++waiting; // reloaded when the tokens file shows the token there
                continue;
            }
            batch.push_back(key);
        }
        if (!batch.empty()) {
            auto lease = router.pool().acquire();
            std::vector<std::optional<Error>> results;
            try {
                results = router.load_all(*lease, batch, module);
            } catch (const Error& e) {
                if (classify(e) == Fault::connection) {
                    lease.discard();
                }
                throw;
            }
            for (std::size_t i = 0; i < batch.size(); ++i) {
                if (!results[i]) {
                    ++reloaded;
                } else if (classify(*results[i]) == Fault::final) {
                    logger().warn("key {} ('{}') not reloaded on module {}: {}",
                                  batch[i]->info.ident, batch[i]->info.label, module,
                                  results[i]->what());
                } else {
                    throw *results[i]; // about the module: the whole reload is retried
                }
            }
        }
    } catch (const Error& e) {
        retries_.failed(module); // retried at each check() while the window is open
        retry_reason_[module] = e.what();
        logger().debug("reload onto module {} failed ({}); retrying", module, e.what());
        pending_.store(true, std::memory_order_relaxed);
        return;
    }
    retries_.clear(module);
    retry_reason_.erase(module);
    if (waiting == 0) {
        logger().info("reloaded {} key(s) onto module {}: {}", reloaded, module, why);
    } else {
        logger().info("reloaded {} key(s) onto module {}: {}; {} key(s) wait for their token to "
                      "be loaded there",
                      reloaded, module, why, waiting);
    }
    parts_.group.join(module, why);
}

void Reloader::retry_pending() {
    for (std::uint32_t module : retries_.take_expired()) {
        parts_.group.abandon(module, "keys could not be reloaded onto it within " +
                                         std::to_string(retries_.window().count()) +
                                         " ms (last error: " + retry_reason_[module] +
                                         "); it stays out until the tokens file changes again");
        retry_reason_.erase(module);
    }
    for (std::uint32_t module : retries_.due()) {
        reload_module(module, "reload retried");
    }
    update_pending();
}

} // namespace preloadrun::pkcs11
