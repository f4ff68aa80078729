#include "instance.hpp"

#include "log.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/tokens/environment.hpp"
#include "preloadrun/tokens/liveness.hpp"
#include "preloadrun/tokens/reader.hpp"

#include <unistd.h>

namespace preloadrun::pkcs11 {

Instance::Instance(Config config, Seams seams, bool threads_allowed)
    : config_(std::move(config)), pool_(std::move(seams.connect), Pool::kMaxIdle, *seams.clock) {
    std::vector<hsm::ModuleInfo> modules;
    std::vector<hsm::TokenInfo> tokens;
    std::vector<hsm::KeyInfo> keys;
    Bytes instance;
    {
        auto lease = pool_.acquire();
        modules = lease->modules();
        tokens = lease->tokens();
        keys = lease->keys();
        instance = lease->instance();
    }
    // What is read here belongs to this epoch: a later one is a restart.
    validated_epoch_.store(pool_.epoch(), std::memory_order_release);
    note_mechanisms(modules);
    for (const auto& m : modules) {
        if (!group_.track(m.number, m.esn, m.generation)) {
            continue;
        }
        if (m.state != hsm::ModuleState::usable) {
            continue;
        }
        if (config_.load_sharing || group_.members().empty()) {
            group_.join(m.number, config_.load_sharing ? "usable at start (load-sharing)"
                                                       : "first usable module (no load-sharing)");
        }
    }
    if (group_.members().empty()) {
        logger().error("no usable HSM module at start: operations will fail until restart{}",
                       config_.reload_keys ? " or a reload" : "");
    }
    slots_ = std::make_unique<Slots>(std::move(tokens), config_.load_sharing);
    router_ = std::make_unique<Router>(pool_, group_, *slots_);
    objects_.sync(keys, [this](const hsm::KeyInfo& k) { return slots_->slot_of(k); });
    if (config_.tokens_file) {
        read_tokens_file(instance);
    }
    if (config_.reload_keys) {
        if (!config_.tokens_file) {
            logger().warn("{} is set but {} is not: keys are load-shared but nothing will be "
                          "reloaded",
                          tokens::env::kReloadKeys, tokens::env::kTokensFile);
        } else if (!threads_allowed) {
            throw CkError(CKR_NEED_TO_CREATE_THREADS,
                          "key reloading needs a watcher thread, and the application forbids "
                          "threads (CKF_LIBRARY_CANT_CREATE_OS_THREADS)");
        } else {
            std::unique_ptr<ChangeCount> watch;
            try {
                watch = seams.watch ? seams.watch(*config_.tokens_file)
                                    : std::make_unique<ReloadWatch>(*config_.tokens_file);
            } catch (const std::exception& e) {
                logger().error("cannot watch tokens file {}: {}; keys will not be reloaded",
                               config_.tokens_file->string(), e.what());
            }
            if (watch) {
                reloader_ = std::make_unique<Reloader>(
                    *config_.tokens_file, Reloader::Parts{group_, *slots_, objects_, *router_},
                    *seams.clock, config_.retry_window, std::move(watch), file_version_);
                logger().info("key reloading on: watching {}", config_.tokens_file->string());
            }
        }
    }
    Router::Waiting waiting;
    // Waiting for a restarting service helps only where modules come back.
    waiting.service_wait = reloader_ ? config_.service_wait : std::chrono::milliseconds(0);
    waiting.recover = [this] { recover(); };
    waiting.epoch_changed = [this] {
        return pool_.epoch() != validated_epoch_.load(std::memory_order_acquire);
    };
    router_->set_waiting(std::move(waiting));
}

void Instance::revalidate() {
    std::lock_guard lock(revalidate_mutex_);
    for (;;) {
        const auto epoch = pool_.epoch();
        if (epoch == validated_epoch_.load(std::memory_order_acquire)) {
            return;
        }
        std::vector<hsm::ModuleInfo> modules;
        {
            auto lease = pool_.acquire();
            modules = lease->modules();
        }
        if (pool_.epoch() != epoch) {
            continue; // restarted again meanwhile
        }
        logger().warn("the HSM service restarted: what this process held there is gone; {}",
                      reloader_ ? "reloading the keys onto every usable module"
                                : "modules stay out until the application restarts (key "
                                  "reloading is off)");
        note_mechanisms(modules);
        if (reloader_) {
            reloader_->service_restarted(modules, epoch);
        } else {
            forget_service_instance(group_, *slots_, objects_, modules);
        }
        validated_epoch_.store(epoch, std::memory_order_release);
    }
}

void Instance::note_mechanisms(const std::vector<hsm::ModuleInfo>& modules) {
    std::uint32_t lacked = 0;
    for (const auto& m : modules) {
        if (m.state != hsm::ModuleState::usable) {
            continue; // what it can do is not known, or may change when it is back
        }
        for (auto kind : m.lacks) {
            lacked |= bit(kind);
        }
    }
    lacked_.store(lacked, std::memory_order_relaxed);
}

void Instance::recover() noexcept {
    try {
        if (pool_.epoch() == validated_epoch_.load(std::memory_order_acquire)) {
            // Is the service back, and is it a new instance? A new connection
            // tells (one that was idle may belong to the old one).
            pool_.fresh();
        }
        revalidate();
        if (reloader_) {
            reloader_->check();
        }
    } catch (const std::exception& e) {
        logger().debug("the HSM service is not back yet: {}", e.what());
    }
}

Instance::~Instance() = default;

void Instance::read_tokens_file(const Bytes& instance) {
    const auto& path = *config_.tokens_file;
    // A file that is not used is told at once (a notice, whatever the log
    // settings): the application would otherwise meet it only as a failed
    // login or operation, long after.
    const std::string named = "tokens file " + path.string();
    const std::string needs_pin = "C_Login on its tokens needs their passphrase (or point " +
                                  std::string(tokens::env::kTokensFile) + " at a live file)";
    const auto liveness = tokens::check(path);
    if (liveness.status != tokens::Status::live) {
        notice(spdlog::level::warn, named + " not used (" +
                                        std::string(tokens::to_string(liveness.status)) +
                                        "): " + liveness.reason + "; " + needs_pin);
        return;
    }
    if (auto foreign = tokens::published_by_another_user(liveness, ::geteuid())) {
        notice(spdlog::level::warn,
               named + " not used, although live (" + liveness.reason + "): " + *foreign);
        return;
    }
    const auto& file = *liveness.file;
    // Handles issued by another instance of the service (it restarted since,
    // or preloadrun uses another one) are not used: with key reloading they
    // are taken when the file is rewritten for this one; without, the file
    // is never read again, and not used.
    const bool same_instance = file.service_instance == to_hex(instance);
    if (!same_instance) {
        notice(spdlog::level::warn,
               named + " names another instance of the HSM service (" + file.service_instance +
                   "; this process uses " + to_hex(instance) + " at " +
                   config_.endpoint.socket_path +
                   "), written before the service restarted or by a preloadrun that uses "
                   "another service (" +
                   tokens::env::kServiceSocket.name + "): " +
                   (config_.reload_keys
                        ? "its handles are used once preloadrun publishes them for this one"
                        : "not used; " + needs_pin));
        if (!config_.reload_keys) {
            return;
        }
    }
    file_version_ = tokens::version_of(file);
    std::size_t used = 0;
    for (const auto& token :
         tokens::current_handles(file, to_hex(instance), group_.generations())) {
        const auto slot = slots_->slot_of_token_hex(token.hash);
        if (!slot) {
            logger().warn("tokens file {} lists token {} ({}), which this world does not have",
                          path.string(), token.name, token.hash);
            continue;
        }
        slots_->set_preloaded(*slot, true);
        ++used;
        for (const auto& loaded : token.loaded) {
            slots_->set_handle(*slot, loaded.module,
                               TokenHandle{loaded.handle, loaded.module_generation});
        }
    }
    logger().info("using tokens file {} ({}, generation {}, {} token(s))", path.string(),
                  liveness.reason, file.generation, used);
}

void Instance::login(CK_SLOT_ID slot, CK_USER_TYPE user, std::span<const std::uint8_t> pin) {
    slots_->check(slot);
    if (user == CKU_SO) {
        throw CkError(CKR_USER_TYPE_INVALID, "there is no security officer login");
    }
    if (user != CKU_USER && user != CKU_CONTEXT_SPECIFIC) {
        throw CkError(CKR_USER_TYPE_INVALID, "unknown user type");
    }
    if (slots_->logged_in(slot)) {
        if (user == CKU_CONTEXT_SPECIFIC) {
            return;
        }
        throw CkError(CKR_USER_ALREADY_LOGGED_IN, "already logged in");
    }
    if (slot == kAcceleratorSlot || slots_->preloaded(slot)) {
        // Module-protected keys need no PIN; a preloaded token's passphrase
        // was given to preloadrun by the operator.
        slots_->set_logged_in(slot, true);
        return;
    }
    const auto& token = *slots_->token(slot);
    const SecureBuffer passphrase(pin.data(), pin.size());
    std::size_t loaded = 0;
    std::string last_error = "no usable module in the group";
    for (std::uint32_t m : group_.members()) {
        try {
            auto lease = pool_.acquire();
            const auto handle = lease->load_token(m, token.hash, passphrase);
            const auto record = group_.record(m);
            slots_->set_handle(slot, m, TokenHandle{handle, record ? record->generation : 0});
            ++loaded;
        } catch (const Error& e) {
            if (e.code() == ErrorCode::wrong_passphrase) {
                throw CkError(CKR_PIN_INCORRECT, e.what());
            }
            if (e.code() == ErrorCode::too_many_attempts) {
                throw CkError(CKR_PIN_LOCKED, e.what());
            }
            if (classify(e) == Fault::final) {
                throw;
            }
            last_error = e.what();
            logger().warn("token '{}' not loaded on module {}: {}", token.name, m, e.what());
        }
    }
    if (loaded == 0) {
        throw CkError(CKR_DEVICE_ERROR,
                      "token '" + token.name + "' could not be loaded: " + last_error);
    }
    slots_->set_logged_in(slot, true);
    logger().info("token '{}' loaded by login on {} module(s)", token.name, loaded);
}

void Instance::set_pin(CK_SLOT_ID slot, std::span<const std::uint8_t> old_pin,
                       std::span<const std::uint8_t> new_pin) {
    slots_->check(slot);
    if (slot == kAcceleratorSlot) {
        throw CkError(CKR_FUNCTION_NOT_SUPPORTED, "the accelerator slot has no PIN");
    }
    if (new_pin.empty()) {
        throw CkError(CKR_PIN_LEN_RANGE, "the new passphrase must not be empty");
    }
    const auto& token = *slots_->token(slot);
    const SecureBuffer passphrase(old_pin.data(), old_pin.size());
    const SecureBuffer fresh(new_pin.data(), new_pin.size());
    try {
        router_->run_any([&](hsm::Service& service, std::uint32_t m) {
            service.change_passphrase(m, token.hash, passphrase, fresh);
            return Bytes{};
        });
    } catch (const Error& e) {
        if (e.code() == ErrorCode::wrong_passphrase) {
            throw CkError(CKR_PIN_INCORRECT, e.what());
        }
        if (e.code() == ErrorCode::too_many_attempts) {
            throw CkError(CKR_PIN_LOCKED, e.what());
        }
        if (e.code() == ErrorCode::usage) {
            throw CkError(CKR_FUNCTION_NOT_SUPPORTED, e.what()); // a PKCS#11 member's PIN
        }
        throw;
    }
    logger().info("token '{}': passphrase changed", token.name);
}

void Instance::logout(CK_SLOT_ID slot) {
    slots_->check(slot);
    if (!slots_->logged_in(slot)) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "not logged in");
    }
    slots_->set_logged_in(slot, false);
}

void Instance::refresh_objects() {
    auto lease = pool_.acquire();
    const auto keys = lease->keys();
    objects_.sync(keys, [this](const hsm::KeyInfo& k) { return slots_->slot_of(k); });
}

bool Instance::visible(const ObjectStore::Ref& ref, CK_SLOT_ID session_slot) const {
    if (ref.key->slot != session_slot) {
        return false;
    }
    const Bytes* is_private = ref.attributes().find(CKA_PRIVATE);
    const bool hidden = is_private != nullptr && is_private->size() == 1 && (*is_private)[0] != 0;
    return !hidden || slots_->logged_in(session_slot);
}

void Instance::closed(Session& session) {
    for (const auto& key : objects_.keys()) {
        if (!key->session || key->creator != session.handle) {
            continue;
        }
        if (auto handle = key->handle_on(key->home_module)) {
            try {
                auto lease = pool_.acquire();
                lease->unload(key->home_module, *handle);
            } catch (const std::exception& e) {
                logger().debug("session key {} not unloaded: {}", key->info.ident, e.what());
            }
        }
        objects_.remove(key->info.ident);
    }
}

CK_STATE Instance::session_state(const Session& session) const {
    const bool rw = (session.flags & CKF_RW_SESSION) != 0;
    if (slots_->logged_in(session.slot)) {
        return rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS;
    }
    return rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION;
}

} // namespace preloadrun::pkcs11
