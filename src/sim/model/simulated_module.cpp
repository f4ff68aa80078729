#include "model/simulated_module.hpp"

#include "model/keywrap.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"

#include <map>
#include <thread>
#include <vector>

namespace preloadrun::sim {

namespace {

std::string module_name(std::uint32_t number) {
    return "module " + std::to_string(number);
}

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.engine");
}

LoadedObject loaded(const ObjectTable::Object& object) {
    return LoadedObject{object.token ? &object.token->info : nullptr,
                        object.key ? &object.key->info : nullptr};
}

} // namespace

SimulatedModule::SimulatedModule(ModuleStart start, World& world, TokenUnlocker& unlocker)
    : number_(start.number), esn_(std::move(start.esn)), world_(world), unlocker_(unlocker),
      state_(start.state), generation_(start.generation), latency_ms_(start.latency_ms),
      objects_(start.number, start.objects, std::move(start.handles)) {}

// ---- state ----

hsm::ModuleInfo SimulatedModule::info_locked() const {
    hsm::ModuleInfo info;
    info.number = number_;
    info.esn = esn_;
    info.state = state_;
    info.generation = generation_;
    info.latency_ms = latency_ms_;
    info.ops = ops_;
    info.ops_failed = ops_failed_;
    info.objects = static_cast<std::uint32_t>(objects_.size());
    info.fail_next = fail_next_;
    info.drained = drained_;
    return info;
}

hsm::ModuleInfo SimulatedModule::info() const {
    std::lock_guard lock(state_mutex_);
    return info_locked();
}

hsm::ModuleState SimulatedModule::state() const {
    std::lock_guard lock(state_mutex_);
    return state_;
}

std::uint64_t SimulatedModule::generation() const {
    std::lock_guard lock(state_mutex_);
    return generation_;
}

Module::Change SimulatedModule::transition(hsm::ModuleState state, bool new_generation,
                                           bool drop_objects, bool drained) {
    // Destroyed (and token keys wiped) outside the lock.
    std::map<hsm::ObjectHandle, ObjectTable::Object> dropped;
    std::lock_guard lock(state_mutex_);
    Change change{state_, generation_, {}};
    state_ = state;
    drained_ = drained;
    if (new_generation) {
        ++generation_;
    }
    if (drop_objects) {
        dropped = objects_.take_all();
    }
    change.now = info_locked();
    return change;
}

void SimulatedModule::set_latency(std::uint32_t latency_ms) {
    std::lock_guard lock(state_mutex_);
    latency_ms_ = latency_ms;
}

void SimulatedModule::set_fail_next(std::uint32_t count) {
    std::lock_guard lock(state_mutex_);
    fail_next_ = count;
}

// ---- operations ----

void SimulatedModule::check_usable_locked() const {
    if (state_ != hsm::ModuleState::usable) {
        throw Error(ErrorCode::module_not_usable,
                    module_name(number_) + " is " + std::string(hsm::to_string(state_)) +
                        " (generation " + std::to_string(generation_) + ")");
    }
}

std::chrono::steady_clock::time_point SimulatedModule::begin_operation() {
    auto start = std::chrono::steady_clock::now();
    std::lock_guard lock(state_mutex_);
    check_usable_locked(); // a dead module answers at once
    auto deadline = start + std::chrono::milliseconds(latency_ms_);
    if (fail_next_ > 0) {
        --fail_next_;
        throw Error(ErrorCode::transient, "injected transient failure on " + module_name(number_) +
                                              " (" + std::to_string(fail_next_) + " more pending)");
    }
    return deadline;
}

void SimulatedModule::finish_operation(std::chrono::steady_clock::time_point deadline) {
    std::this_thread::sleep_until(deadline);
    std::lock_guard lock(state_mutex_);
    if (!drained_) {
        check_usable_locked(); // cleared or failed while it worked: the answer is lost
    }
}

void SimulatedModule::end_operation(OpKind kind, bool ok) noexcept {
    std::lock_guard lock(state_mutex_);
    if (!ok) {
        ++ops_failed_;
    } else if (kind == OpKind::crypto) {
        ++ops_;
    }
}

hsm::ObjectHandle SimulatedModule::load_token(const Caller& caller, const Bytes& token_hash,
                                              const SecureBuffer& passphrase) {
    auto card = world_.card(token_hash);
    auto token_key = unlocker_.unlock(card, passphrase, caller.uid);
    return operate(caller.uid, OpKind::management, [&] {
        auto handle =
            add_token(caller.uid, caller.client, World::info_of(card), std::move(token_key));
        logger()->debug("uid {} loaded {} on module {}: handle {}", caller.uid,
                        token_label(World::info_of(card)), number_, handle);
        return handle;
    });
}

std::shared_ptr<const TokenObject>
SimulatedModule::protecting_token(const KeyRecord& record, const hsm::TokenInfo& protector,
                                  hsm::ObjectHandle token_handle, uid_t uid) const {
    if (token_handle == 0) {
        throw Error(ErrorCode::permission, "key " + record.ident + " is protected by " +
                                               token_label(protector) +
                                               ": load that token on module " +
                                               std::to_string(number_) + " and pass its handle");
    }
    auto token = this->token(token_handle, uid);
    if (token->info.hash != record.protection->hash ||
        token->info.type != record.protection->type) {
        throw Error(ErrorCode::permission,
                    "token handle " + std::to_string(token_handle) + " on module " +
                        std::to_string(number_) + " is " + token_label(token->info) + ", but key " +
                        record.ident + " is protected by " + token_label(protector));
    }
    return token;
}

hsm::ObjectHandle SimulatedModule::load_key(const Caller& caller, const std::string& ident,
                                            hsm::ObjectHandle token_handle) {
    return operate(caller.uid, OpKind::management, [&] {
        auto record = world_.key_record(ident);
        auto info = world_.info_of(record);
        std::shared_ptr<const TokenObject> token;
        if (record.protection) {
            token = protecting_token(record, *info.token, token_handle, caller.uid);
        } else if (token_handle != 0) {
            throw Error(ErrorCode::usage,
                        "key " + ident + " is module-protected: load it with token handle 0");
        }
        auto key = world_.unwrap_key(record, token ? &token->key : nullptr);
        return add_key(caller.uid, caller.client,
                       KeyObject{std::move(info), std::move(key), token_handle});
    });
}

void SimulatedModule::change_passphrase(const Caller& caller, const Bytes& token_hash,
                                        const SecureBuffer& passphrase, const SecureBuffer& fresh) {
    auto card = world_.card(token_hash);
    auto token_key = unlocker_.unlock(card, passphrase, caller.uid);
    operate(caller.uid, OpKind::management, [&] {
        world_.set_passphrase(card.hash, token_key, fresh);
        logger()->info("uid {} changed the passphrase of {}", caller.uid,
                       token_label(World::info_of(card)));
    });
}

void SimulatedModule::unload(const Caller& caller, hsm::ObjectHandle handle) {
    operate(caller.uid, OpKind::management, [&] { remove(handle, caller.uid); });
}

hsm::GeneratedKey SimulatedModule::generate_key(const Caller& caller, const hsm::KeySpec& spec) {
    return operate(caller.uid, OpKind::crypto, [&] {
        std::shared_ptr<const TokenObject> token;
        if (spec.token_handle != 0) {
            token = this->token(spec.token_handle, caller.uid);
        }
        std::optional<Protection> protection;
        if (token) {
            protection = Protection{token->info.type, token->info.hash};
        }
        if (spec.persistent && spec.refuse_duplicate) {
            // Before the work of generating; store_key() checks again.
            world_.refuse_duplicate(spec.label, spec.id, protection);
        }
        std::shared_ptr<const Key> key;
        bool extractable = spec.extractable;
        bool imported = !spec.value.empty();
        if (spec.copy_of != 0) {
            const auto source = copy_source(caller, spec.copy_of, token.get());
            key = source->key;
            extractable = source->info.extractable;
            imported = source->info.imported;
        } else if (spec.unwrap_with != 0) {
            key = unwrapped(caller, spec);
        } else if (spec.value.empty()) {
            key = std::make_shared<const Key>(
                Key::generate(spec.type, spec.bits, spec.public_exponent));
        } else {
            key = std::make_shared<const Key>(Key::import(spec.type, spec.bits, spec.value));
        }
        if (extractable && spec.persistent && !token) {
            // Anyone may load a module-protected key, and wrap what is loaded.
            throw Error(ErrorCode::permission,
                        "a module-protected key can be loaded by every user of the service: it "
                        "cannot be extractable");
        }
        hsm::KeyInfo info;
        info.label = spec.label;
        info.id = spec.id;
        info.type = key->type();
        info.bits = key->bits();
        info.persistent = spec.persistent;
        info.public_der = key->public_der();
        info.extractable = extractable;
        info.imported = imported;
        info.check_value = key->check_value();
        if (token) {
            info.token = token->info;
        }
        if (spec.persistent) {
            KeyRecord record;
            record.ident = new_ident();
            record.label = spec.label;
            record.id = spec.id;
            record.creator = caller.uid;
            record.protection = protection;
            record.extractable = extractable;
            record.imported = imported;
            world_.store_key(record, *key, token ? &token->key : nullptr, spec.refuse_duplicate);
            info.ident = record.ident;
        } else {
            info.ident = new_ident();
        }
        auto handle =
            add_key(caller.uid, caller.client, KeyObject{info, std::move(key), spec.token_handle});
        logger()->debug("uid {} generated {} key {} ('{}') on module {}: handle {}", caller.uid,
                        describe(info.type, info.bits), info.ident, info.label, number_, handle);
        return hsm::GeneratedKey{handle, std::move(info)};
    });
}

std::shared_ptr<const KeyObject> SimulatedModule::copy_source(const Caller& caller,
                                                              hsm::ObjectHandle handle,
                                                              const TokenObject* token) const {
    const auto source = key(handle, caller.uid);
    // A copy is under the same protection as its key, never weaker.
    const bool same = source->info.token
                          ? token != nullptr && token->info.hash == source->info.token->hash
                          : token == nullptr;
    if (!same) {
        throw Error(ErrorCode::permission, "a copy of a key keeps the key's protection");
    }
    return source;
}

std::shared_ptr<const Key> SimulatedModule::unwrapped(const Caller& caller,
                                                      const hsm::KeySpec& spec) const {
    const auto wrapping = key(spec.unwrap_with, caller.uid);
    Bytes plain = wrapping->key->decrypt(spec.unwrap_mechanism, spec.value.span());
    SecureBuffer value(plain.data(), plain.size());
    secure_wipe(plain.data(), plain.size());
    // AES-ECB and -CBC without padding give whole blocks: a secret key of
    // the size asked for is their first bytes (PKCS#11's CKA_VALUE_LEN).
    const auto kind = spec.unwrap_mechanism.kind;
    const std::size_t want = spec.bits / 8;
    if (hsm::is_secret(spec.type) && want != 0 && value.size() > want &&
        value.size() - want < hsm::kAesBlock &&
        (kind == hsm::MechanismKind::aes_ecb || kind == hsm::MechanismKind::aes_cbc)) {
        value = SecureBuffer(value.data(), want);
    }
    return std::make_shared<const Key>(Key::import_unwrapped(spec.type, spec.bits, value));
}

void SimulatedModule::verify_public(const Caller& caller, const Bytes& public_key,
                                    const hsm::Mechanism& mech, const Bytes& data,
                                    const Bytes& signature) {
    operate(caller.uid, OpKind::crypto,
            [&] { Key::from_public(public_key).verify(mech, data, signature); });
}

Bytes SimulatedModule::encrypt_public(const Caller& caller, const Bytes& public_key,
                                      const hsm::Mechanism& mech, const Bytes& data) {
    return operate(caller.uid, OpKind::crypto,
                   [&] { return Key::from_public(public_key).encrypt(mech, data); });
}

Bytes SimulatedModule::wrap_key(const Caller& caller, hsm::ObjectHandle wrapping_key,
                                const hsm::Mechanism& mech, hsm::ObjectHandle key) {
    return operate(caller.uid, OpKind::crypto, [&] {
        const auto target = this->key(key, caller.uid);
        const auto wrapping = this->key(wrapping_key, caller.uid);
        if (!target->info.extractable) {
            throw Error(ErrorCode::permission, "key " + target->info.ident +
                                                   " is not extractable: it never leaves the "
                                                   "HSM");
        }
        if (hsm::is_rsa_encryption(mech.kind) && !hsm::is_secret(target->info.type)) {
            throw Error(ErrorCode::usage, "RSA wraps secret keys only");
        }
        return wrapping->key->encrypt(mech, target->key->private_bytes().span());
    });
}

Bytes SimulatedModule::sign(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                            const Bytes& data) {
    return operate(caller.uid, OpKind::crypto,
                   [&] { return this->key(key, caller.uid)->key->sign(mech, data); });
}

void SimulatedModule::verify(const Caller& caller, hsm::ObjectHandle key,
                             const hsm::Mechanism& mech, const Bytes& data,
                             const Bytes& signature) {
    operate(caller.uid, OpKind::crypto,
            [&] { this->key(key, caller.uid)->key->verify(mech, data, signature); });
}

Bytes SimulatedModule::encrypt(const Caller& caller, hsm::ObjectHandle key,
                               const hsm::Mechanism& mech, const Bytes& data) {
    return operate(caller.uid, OpKind::crypto,
                   [&] { return this->key(key, caller.uid)->key->encrypt(mech, data); });
}

Bytes SimulatedModule::decrypt(const Caller& caller, hsm::ObjectHandle key,
                               const hsm::Mechanism& mech, const Bytes& data) {
    return operate(caller.uid, OpKind::crypto,
                   [&] { return this->key(key, caller.uid)->key->decrypt(mech, data); });
}

Bytes SimulatedModule::random(const Caller& caller, std::uint32_t length) {
    return operate(caller.uid, OpKind::crypto, [&] { return random_bytes(length); });
}

void SimulatedModule::with_token(const Caller& caller, hsm::ObjectHandle token_handle,
                                 const std::function<void(const hsm::TokenInfo& token)>& body) {
    operate(caller.uid, OpKind::management, [&] { body(token(token_handle, caller.uid)->info); });
}

// ---- the object table ----

hsm::ObjectHandle SimulatedModule::add_locked(ObjectTable::Object object) {
    // A clear between the start of the operation and now must not let an
    // object into the new generation's table: re-check under the lock.
    check_usable_locked();
    return objects_.add(std::move(object));
}

hsm::ObjectHandle SimulatedModule::add_token(uid_t owner, ClientId client, hsm::TokenInfo info,
                                             SecureBuffer token_key) {
    auto token = std::make_shared<TokenObject>(TokenObject{std::move(info), std::move(token_key)});
    std::lock_guard lock(state_mutex_);
    return add_locked(ObjectTable::Object{owner, client, std::move(token), nullptr});
}

hsm::ObjectHandle SimulatedModule::add_key(uid_t owner, ClientId client, KeyObject key) {
    auto shared = std::make_shared<KeyObject>(std::move(key));
    std::lock_guard lock(state_mutex_);
    if (shared->token_handle != 0) {
        // The token must still be loaded (a clear or an unload may have raced).
        const auto& token = objects_.find(shared->token_handle, owner);
        if (!token.token) {
            throw Error(ErrorCode::invalid_handle,
                        "handle " + std::to_string(shared->token_handle) + " on " +
                            module_name(number_) + " is a key, not a token");
        }
    }
    return add_locked(ObjectTable::Object{owner, client, nullptr, std::move(shared)});
}

std::shared_ptr<const TokenObject> SimulatedModule::token(hsm::ObjectHandle handle,
                                                          uid_t caller) const {
    std::lock_guard lock(state_mutex_);
    const auto& object = objects_.find(handle, caller);
    if (!object.token) {
        throw Error(ErrorCode::invalid_handle, "handle " + std::to_string(handle) + " on " +
                                                   module_name(number_) + " is a key, not a token");
    }
    return object.token;
}

std::shared_ptr<const KeyObject> SimulatedModule::key(hsm::ObjectHandle handle,
                                                      uid_t caller) const {
    std::lock_guard lock(state_mutex_);
    const auto& object = objects_.find(handle, caller);
    if (!object.key) {
        throw Error(ErrorCode::invalid_handle, "handle " + std::to_string(handle) + " on " +
                                                   module_name(number_) + " is a token, not a key");
    }
    return object.key;
}

std::size_t SimulatedModule::remove(hsm::ObjectHandle handle, uid_t caller) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase(handle, caller);
    return dropped.size();
}

std::size_t SimulatedModule::unload_client(ClientId client) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase_client(client);
    return dropped.size();
}

std::size_t SimulatedModule::unload_matching(const ObjectMatch& match) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase_matching(
        [&](const ObjectTable::Object& object) { return match(loaded(object)); });
    return dropped.size();
}

std::size_t SimulatedModule::held_by(uid_t owner) const {
    std::lock_guard lock(state_mutex_);
    return objects_.held_by(owner);
}

} // namespace preloadrun::sim
