#include "pkcs11/reloader.hpp"

#include "pkcs11/log.hpp"
#include "preloadrun/tokens/liveness.hpp"

#include <set>

namespace preloadrun::pkcs11 {

Reloader::Reloader(std::filesystem::path file, Parts parts, const Clock& clock,
                   std::chrono::milliseconds retry_window, std::unique_ptr<ReloadWatch> watch,
                   std::uint64_t initial_file_generation)
    : file_(std::move(file)), parts_(parts), watch_(std::move(watch)),
      retries_(clock, retry_window), file_generation_(initial_file_generation) {
    seen_.store(current_version(), std::memory_order_relaxed);
}

void Reloader::slow_path(std::uint64_t version) {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) {
        return; // another thread is at it; this operation goes on as things are
    }
    try {
        if (version != seen_.load(std::memory_order_relaxed)) {
            seen_.store(version, std::memory_order_relaxed);
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
    if (owner_dead_reported_) {
        owner_dead_reported_ = false;
        logger().info("tokens file {} is live again: {}", file_.string(), liveness.reason);
    }
    if (liveness.file->generation == file_generation_) {
        return;
    }
    file_generation_ = liveness.file->generation;
    logger().debug("tokens file {} changed (generation {})", file_.string(), file_generation_);
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
            if (fm.state == "usable") {
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
            if (fm.state == "usable") {
                to_reload[fm.number] =
                    "module usable again (generation " + std::to_string(fm.generation) + ")";
            }
        }
        if (fm.state != "usable") {
            unusable.insert(fm.number);
            file_unusable_.insert(fm.number);
        } else if (file_unusable_.erase(fm.number) != 0 && !to_reload.count(fm.number)) {
            to_reload[fm.number] = "module usable again";
        }
    }

    for (const auto& token : file.tokens) {
        const auto slot = slots.slot_of_token_hex(token.hash);
        if (!slot) {
            continue;
        }
        slots.set_preloaded(*slot, true);
        for (const auto& loaded : token.loaded) {
            const TokenHandle fresh{loaded.handle, loaded.module_generation};
            const auto record = group.record(loaded.module);
            if (!record || record->generation != loaded.module_generation) {
                continue; // not tracked, or loaded before the module's last clear
            }
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
        group.leave(m, "the tokens file says it is not usable");
    }
    for (const auto& [module, why] : to_reload) {
        retries_.clear(module);
        reload_module(module, why);
    }
    pending_.store(!retries_.empty(), std::memory_order_relaxed);
}

void Reloader::reload_module(std::uint32_t module, const std::string& why) {
    auto& router = parts_.router;
    std::size_t reloaded = 0;
    std::size_t waiting = 0; // keys whose token is not (yet) loaded on this module
    try {
        auto lease = router.pool().acquire();
        for (const auto& key : parts_.objects.keys()) {
            // Keys in use: loaded on some module already. Others load lazily.
            if (key->session || key->lost() || key->handle_on(module) || !key->loaded_anywhere()) {
                continue;
            }
            if (key->info.token && !parts_.slots.handle(key->slot, module)) {
                ++waiting; // reloaded when the tokens file shows the token there
                continue;
            }
            try {
                router.load(*lease, *key, module);
                ++reloaded;
            } catch (const Error& e) {
                if (classify(e.code()) == Fault::final) {
                    logger().warn("key {} ('{}') not reloaded on module {}: {}", key->info.ident,
                                  key->info.label, module, e.what());
                    continue;
                }
                if (classify(e.code()) == Fault::connection) {
                    lease.discard();
                }
                throw;
            }
        }
    } catch (const Error& e) {
        retries_.failed(module);
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
    pending_.store(!retries_.empty(), std::memory_order_relaxed);
}

} // namespace preloadrun::pkcs11
