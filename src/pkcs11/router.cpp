#include "router.hpp"

#include "ck.hpp"
#include "log.hpp"

#include <algorithm>
#include <optional>
#include <thread>
#include <type_traits>

namespace preloadrun::pkcs11 {

namespace {

template <class Hopeless> bool is_hopeless(const Hopeless& hopeless) {
    if constexpr (std::is_same_v<Hopeless, std::nullptr_t>) {
        return false;
    } else {
        return hopeless();
    }
}

} // namespace

Fault classify(const Error& error) noexcept {
    switch (error.retry()) {
    case Retry::module_gone:
        return Fault::module_gone;
    case Retry::transient:
        return Fault::try_elsewhere;
    case Retry::connection:
    case Retry::protocol:
        return Fault::connection;
    case Retry::final:
        break;
    }
    return Fault::final;
}

void Router::module_gone(std::uint32_t module, const Error& error) {
    if (group_.is_member(module)) {
        pool_.module_left(); // an operation left with no module waits for them to come back
    }
    group_.leave(module, error.what());
}

void Router::recover_if_needed() {
    if (waiting_.epoch_changed && waiting_.epoch_changed()) {
        waiting_.recover();
    }
}

template <class Result, class Candidates, class Fn, class Hopeless>
Result Router::attempt(const Candidates& candidates, const char* what, Fn&& fn,
                       const Hopeless& hopeless, std::optional<std::uint32_t> first) {
    recover_if_needed();
    const auto start = pool_.clock().now();
    const auto deadline = start + waiting_.service_wait;
    auto pause = std::chrono::milliseconds(5);
    for (;;) {
        try {
            return attempt_once<Result>(candidates(), what, fn, first);
        } catch (const CkError&) {
            // Nothing could serve it. Wait only for a service that is, or was
            // just now, unreachable or restarting, or for modules that just
            // left the group (cleared: preloadrun and the reloader bring them
            // back); a fleet with no usable module for longer answers at once.
            const auto now = pool_.clock().now();
            if (waiting_.service_wait.count() <= 0 || now >= deadline ||
                !pool_.disrupted_since(start - waiting_.service_wait) || is_hopeless(hopeless)) {
                throw;
            }
            std::this_thread::sleep_for(std::min<Pool::Clock::duration>(pause, deadline - now));
            pause = std::min(pause * 2, std::chrono::milliseconds(50));
            if (waiting_.recover) {
                waiting_.recover();
            }
        }
    }
}

template <class Result, class Fn>
Result Router::attempt_once(const std::vector<std::uint32_t>& candidates, const char* what, Fn& fn,
                            std::optional<std::uint32_t> first) {
    if (candidates.empty()) {
        throw CkError(CKR_DEVICE_ERROR, std::string("no module of the group can ") + what + " now");
    }
    const std::size_t n = candidates.size();
    std::size_t start = 0;
    if (auto it =
            first ? std::find(candidates.begin(), candidates.end(), *first) : candidates.end();
        it != candidates.end()) {
        start = static_cast<std::size_t>(it - candidates.begin()); // the preferred one first
    } else {
        start = static_cast<std::size_t>(group_.next_turn() % n);
    }
    // Every candidate once, plus a couple of extra turns for transient
    // failures and broken connections.
    const std::size_t tries = n + 2;
    std::optional<Error> last;
    for (std::size_t i = 0; i < tries; ++i) {
        const std::uint32_t module = candidates[(start + i) % n];
        if (!group_.is_member(module)) {
            continue;
        }
        std::optional<Pool::Lease> lease;
        try {
            lease.emplace(pool_.acquire());
            return fn(**lease, module);
        } catch (const Error& e) {
            const Fault fault = classify(e);
            logger().debug("{} on module {} failed ({}{}): {}", what, module, to_string(e.code()),
                           e.origin() == Origin::peer ? ", said the service" : "", e.what());
            switch (fault) {
            case Fault::final:
                throw;
            case Fault::module_gone:
                module_gone(module, e);
                break;
            case Fault::connection:
                if (lease) {
                    lease->discard();
                }
                break;
            case Fault::try_elsewhere:
                break;
            }
            last = e;
        }
    }
    throw CkError(CKR_DEVICE_ERROR, std::string("no module of the group could ") + what +
                                        (last ? std::string(": ") + last->what() : ""));
}

std::vector<std::uint32_t> Router::candidates(const KeyObject& key) const {
    std::vector<std::uint32_t> out;
    if (key.session) {
        if (!key.lost() && group_.is_member(key.home_module)) {
            out.push_back(key.home_module);
        }
        return out;
    }
    for (std::uint32_t m : group_.members()) {
        if ((!key.info.token || slots_.handle(key.slot, m)) && !key.refused_on(m)) {
            out.push_back(m);
        }
    }
    return out;
}

hsm::ObjectHandle Router::token_for(const KeyObject& key, std::uint32_t module) const {
    if (!key.info.token) {
        return 0;
    }
    auto th = slots_.handle(key.slot, module);
    if (!th) {
        throw Error(ErrorCode::invalid_handle, "token of key " + key.info.ident +
                                                   " not loaded on module " +
                                                   std::to_string(module));
    }
    return th->handle;
}

void Router::loaded(KeyObject& key, std::uint32_t module, hsm::ObjectHandle handle) const {
    key.set_handle(module, handle);
    logger().debug("key {} ('{}') loaded on module {}: handle {}", key.info.ident, key.info.label,
                   module, handle);
}

void Router::refused(KeyObject& key, std::uint32_t module, const Error& e) {
    if (e.code() == ErrorCode::not_found && e.origin() == Origin::peer) {
        key.refuse(module);
    }
}

hsm::ObjectHandle Router::load(hsm::Service& service, KeyObject& key, std::uint32_t module) {
    const auto token = token_for(key, module);
    hsm::ObjectHandle handle = 0;
    try {
        handle = service.load_key(module, key.info.ident, token);
    } catch (const Error& e) {
        refused(key, module, e);
        throw;
    }
    loaded(key, module, handle);
    return handle;
}

std::vector<std::optional<Error>>
Router::load_all(hsm::Service& service, const std::vector<std::shared_ptr<KeyObject>>& keys,
                 std::uint32_t module) {
    std::vector<std::optional<Error>> out(keys.size());
    std::vector<hsm::KeyToLoad> batch;
    std::vector<std::size_t> index; // batch entry -> keys entry
    batch.reserve(keys.size());
    index.reserve(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        try {
            batch.push_back({keys[i]->info.ident, token_for(*keys[i], module)});
            index.push_back(i);
        } catch (const Error& e) {
            out[i] = e;
        }
    }
    if (batch.empty()) {
        return out;
    }
    auto results = service.load_keys(module, batch);
    for (std::size_t j = 0; j < results.size() && j < index.size(); ++j) {
        auto& key = *keys[index[j]];
        if (results[j].error) {
            refused(key, module, *results[j].error);
            out[index[j]] = std::move(results[j].error);
        } else {
            loaded(key, module, results[j].handle);
        }
    }
    return out;
}

void Router::check_servable(KeyObject& key) const {
    if (key.session && candidates(key).empty()) {
        key.mark_lost();
        throw CkError(CKR_DEVICE_ERROR, "session key " + key.info.ident + " was on module " +
                                            std::to_string(key.home_module) +
                                            ", which left the group: the key is gone");
    }
    if (!key.session && key.refused_anywhere() && candidates(key).empty()) {
        // Every module that could serve it said it has no such key.
        throw CkError(CKR_KEY_HANDLE_INVALID,
                      "no module of the group holds key " + key.info.ident + " now");
    }
}

hsm::ObjectHandle Router::loaded_on(hsm::Service& service, KeyObject& key, std::uint32_t module) {
    if (auto handle = key.handle_on(module)) {
        return *handle;
    }
    if (key.session) {
        throw Error(ErrorCode::invalid_handle, "session key not on this module");
    }
    try {
        return load(service, key, module);
    } catch (const Error& e) {
        // This module does not hold the key: another may.
        if (key.refused_on(module) && !candidates(key).empty()) {
            throw Error(ErrorCode::transient, "module " + std::to_string(module) +
                                                  " does not hold key " + key.info.ident + ": " +
                                                  e.what());
        }
        throw;
    }
}

Bytes Router::run(KeyObject& key, const KeyOp& op) {
    return run_with(key, nullptr,
                    [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle h,
                        hsm::ObjectHandle) { return op(service, m, h); });
}

Bytes Router::run_with(KeyObject& key, KeyObject* other, const PairOp& op,
                       std::optional<std::uint32_t> first) {
    recover_if_needed(); // a session key of an old instance of the service is gone
    check_servable(key);
    if (other != nullptr) {
        check_servable(*other);
    }
    // The modules that can serve both.
    auto both = [&] {
        auto out = candidates(key);
        if (other != nullptr) {
            const auto also = candidates(*other);
            std::erase_if(out, [&](std::uint32_t m) {
                return std::find(also.begin(), also.end(), m) == also.end();
            });
        }
        return out;
    };
    auto session_gone = [this](const KeyObject& k) {
        return k.session && (k.lost() || !group_.is_member(k.home_module));
    };
    try {
        return attempt<Bytes>(
            both, "use the key",
            [&](hsm::Service& service, std::uint32_t m) {
                const auto handle = loaded_on(service, key, m);
                const hsm::ObjectHandle with = other != nullptr ? loaded_on(service, *other, m) : 0;
                try {
                    return op(service, m, handle, with);
                } catch (const Error& e) {
                    if (classify(e) == Fault::module_gone) {
                        key.forget(m);
                        if (other != nullptr) {
                            other->forget(m);
                        }
                    }
                    throw;
                }
            },
            [&] { return session_gone(key) || (other != nullptr && session_gone(*other)); }, first);
    } catch (const CkError&) {
        for (KeyObject* k : {&key, other}) {
            if (k != nullptr && k->session && !group_.is_member(k->home_module)) {
                k->mark_lost();
            }
        }
        throw;
    }
}

Bytes Router::run_any(const ModuleOp& op) {
    return attempt<Bytes>([this] { return group_.members(); }, "serve the request", op);
}

std::pair<std::uint32_t, hsm::GeneratedKey> Router::generate(CK_SLOT_ID slot, hsm::KeySpec spec) {
    auto mods = [this, slot] {
        std::vector<std::uint32_t> out;
        for (std::uint32_t m : group_.members()) {
            if (slot == kAcceleratorSlot || slots_.handle(slot, m)) {
                out.push_back(m);
            }
        }
        return out;
    };
    std::uint32_t used = 0;
    hsm::GeneratedKey generated;
    attempt<Bytes>(
        mods, "generate the key",
        [&](hsm::Service& service, std::uint32_t m) {
            hsm::KeySpec s = spec;
            s.token_handle = token_handle(slot, m);
            generated = service.generate_key(m, s);
            used = m;
            return Bytes{};
        },
        nullptr, spec.persistent ? std::nullopt : session_home(slot));
    if (!spec.persistent) {
        set_session_home(slot, used);
    }
    return {used, std::move(generated)};
}

std::optional<std::uint32_t> Router::session_home(CK_SLOT_ID slot) const {
    std::lock_guard lock(home_mutex_);
    auto it = session_home_.find(slot);
    if (it == session_home_.end()) {
        return std::nullopt;
    }
    return it->second;
}

void Router::set_session_home(CK_SLOT_ID slot, std::uint32_t module) {
    std::lock_guard lock(home_mutex_);
    session_home_[slot] = module;
}

hsm::ObjectHandle Router::token_handle(CK_SLOT_ID slot, std::uint32_t module) const {
    if (slot == kAcceleratorSlot) {
        return 0;
    }
    const auto token = slots_.handle(slot, module);
    if (!token) {
        // Not this module's fault: another may have the token loaded.
        throw Error(ErrorCode::transient, "the token is not loaded on this module");
    }
    return token->handle;
}

void Router::destroy(const KeyObject& key) {
    auto mods = [this, &key] {
        std::vector<std::uint32_t> out;
        for (std::uint32_t m : group_.members()) {
            if (slots_.handle(key.slot, m)) {
                out.push_back(m);
            }
        }
        return out;
    };
    attempt<Bytes>(mods, "destroy the key", [&](hsm::Service& service, std::uint32_t m) {
        service.destroy_key(key.info.ident, m, token_handle(key.slot, m));
        return Bytes{};
    });
}

} // namespace preloadrun::pkcs11
