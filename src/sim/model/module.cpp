#include "sim/model/module.hpp"

#include <map>
#include <thread>
#include <vector>

namespace preloadrun::sim {

namespace {

std::string module_name(std::uint32_t number) {
    return "module " + std::to_string(number);
}

} // namespace

Module::Module(std::uint32_t number, std::string esn, std::uint32_t latency_ms,
               hsm::ModuleState state, const ObjectLimits& limits, std::uint64_t generation,
               HandleRange handles)
    : number_(number), esn_(std::move(esn)), state_(state), generation_(generation),
      latency_ms_(latency_ms), objects_(number, limits, std::move(handles)) {}

hsm::ModuleInfo Module::info_locked() const {
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
    return info;
}

hsm::ModuleInfo Module::info() const {
    std::lock_guard lock(state_mutex_);
    return info_locked();
}

hsm::ModuleState Module::state() const {
    std::lock_guard lock(state_mutex_);
    return state_;
}

std::uint64_t Module::generation() const {
    std::lock_guard lock(state_mutex_);
    return generation_;
}

Module::Change Module::transition(hsm::ModuleState state, bool bump_generation, bool drop_objects) {
    // Destroyed (and token keys wiped) outside the lock.
    std::map<hsm::ObjectHandle, ObjectTable::Object> dropped;
    std::lock_guard lock(state_mutex_);
    Change change{state_, generation_, {}};
    state_ = state;
    if (bump_generation) {
        ++generation_;
    }
    if (drop_objects) {
        dropped = objects_.take_all();
    }
    change.now = info_locked();
    return change;
}

void Module::set_latency(std::uint32_t latency_ms) {
    std::lock_guard lock(state_mutex_);
    latency_ms_ = latency_ms;
}

void Module::set_fail_next(std::uint32_t count) {
    std::lock_guard lock(state_mutex_);
    fail_next_ = count;
}

void Module::check_usable_locked() const {
    if (state_ != hsm::ModuleState::usable) {
        throw Error(ErrorCode::module_not_usable,
                    module_name(number_) + " is " + std::string(hsm::to_string(state_)) +
                        " (generation " + std::to_string(generation_) + ")");
    }
}

std::chrono::steady_clock::time_point Module::begin_operation() {
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

void Module::finish_operation(std::chrono::steady_clock::time_point deadline) {
    std::this_thread::sleep_until(deadline);
    std::lock_guard lock(state_mutex_);
    check_usable_locked(); // cleared or failed while it worked: the answer is lost
}

void Module::end_operation(OpKind kind, bool ok) noexcept {
    std::lock_guard lock(state_mutex_);
    if (!ok) {
        ++ops_failed_;
    } else if (kind == OpKind::crypto) {
        ++ops_;
    }
}

hsm::ObjectHandle Module::add_locked(ObjectTable::Object object) {
    // A clear between the start of the operation and now must not let an
    // object into the new generation's table: re-check under the lock.
    check_usable_locked();
    return objects_.add(std::move(object));
}

hsm::ObjectHandle Module::add_token(uid_t owner, ClientId client, hsm::TokenInfo info,
                                    SecureBuffer token_key) {
    auto token = std::make_shared<TokenObject>(TokenObject{std::move(info), std::move(token_key)});
    std::lock_guard lock(state_mutex_);
    return add_locked(ObjectTable::Object{owner, client, std::move(token), nullptr});
}

hsm::ObjectHandle Module::add_key(uid_t owner, ClientId client, KeyObject key) {
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

std::shared_ptr<const TokenObject> Module::token(hsm::ObjectHandle handle, uid_t caller) const {
    std::lock_guard lock(state_mutex_);
    const auto& object = objects_.find(handle, caller);
    if (!object.token) {
        throw Error(ErrorCode::invalid_handle, "handle " + std::to_string(handle) + " on " +
                                                   module_name(number_) + " is a key, not a token");
    }
    return object.token;
}

std::shared_ptr<const KeyObject> Module::key(hsm::ObjectHandle handle, uid_t caller) const {
    std::lock_guard lock(state_mutex_);
    const auto& object = objects_.find(handle, caller);
    if (!object.key) {
        throw Error(ErrorCode::invalid_handle, "handle " + std::to_string(handle) + " on " +
                                                   module_name(number_) + " is a token, not a key");
    }
    return object.key;
}

std::size_t Module::unload(hsm::ObjectHandle handle, uid_t caller) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase(handle, caller);
    return dropped.size();
}

std::size_t Module::unload_client(ClientId client) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase_client(client);
    return dropped.size();
}

std::size_t Module::unload_matching(const std::function<bool(const ObjectTable::Object&)>& match) {
    std::vector<ObjectTable::Object> dropped; // destroyed outside the lock
    std::lock_guard lock(state_mutex_);
    dropped = objects_.erase_matching(match);
    return dropped.size();
}

std::size_t Module::held_by(uid_t owner) const {
    std::lock_guard lock(state_mutex_);
    return objects_.held_by(owner);
}

} // namespace preloadrun::sim
