#include "model/object_table.hpp"

#include "preloadrun/common/error.hpp"

#include <set>
#include <string>
#include <utility>

namespace preloadrun::sim {

namespace {

std::string module_name(std::uint32_t number) {
    return "module " + std::to_string(number);
}

} // namespace

bool ObjectTable::holds_token() const noexcept {
    for (const auto& [handle, object] : objects_) {
        if (object.token) {
            return true;
        }
    }
    return false;
}

std::size_t ObjectTable::held_by(uid_t owner) const noexcept {
    auto it = held_.find(owner);
    return it == held_.end() ? 0 : it->second;
}

hsm::ObjectHandle ObjectTable::add(Object object) {
    if (objects_.size() >= limits_.per_module) {
        throw Error(ErrorCode::limit, module_name(module_) + " holds " +
                                          std::to_string(objects_.size()) +
                                          " objects, the most it can; unload some first");
    }
    const auto held = held_by(object.owner);
    if (held >= limits_.per_uid) {
        throw Error(ErrorCode::limit,
                    "uid " + std::to_string(object.owner) + " holds " + std::to_string(held) +
                        " objects on " + module_name(module_) +
                        ", the most one user may (hsmsim serve --max-objects-per-uid " +
                        std::to_string(limits_.per_uid) + "); unload some first");
    }
    if (next_handle_ >= reserved_) {
        const auto below = next_handle_ + kHandleBlock;
        if (reserve_) {
            reserve_(below);
        }
        reserved_ = below;
    }
    const auto owner = object.owner;
    const auto handle = next_handle_;
    objects_.emplace(handle, std::move(object));
    ++next_handle_;
    ++held_[owner];
    return handle;
}

const ObjectTable::Object& ObjectTable::find(hsm::ObjectHandle handle, uid_t caller) const {
    auto it = objects_.find(handle);
    if (it == objects_.end()) {
        throw Error(ErrorCode::invalid_handle,
                    "no object with handle " + std::to_string(handle) + " on " +
                        module_name(module_) +
                        " (never loaded, unloaded, or the module was cleared since)");
    }
    if (it->second.owner != caller) {
        throw Error(ErrorCode::permission, "object " + std::to_string(handle) + " on " +
                                               module_name(module_) + " belongs to another user");
    }
    return it->second;
}

std::map<hsm::ObjectHandle, ObjectTable::Object>::iterator
ObjectTable::forget(std::map<hsm::ObjectHandle, Object>::iterator it,
                    std::vector<Object>& dropped) {
    auto held = held_.find(it->second.owner);
    if (held != held_.end() && --held->second == 0) {
        held_.erase(held);
    }
    dropped.push_back(std::move(it->second));
    return objects_.erase(it);
}

std::vector<ObjectTable::Object> ObjectTable::erase(hsm::ObjectHandle handle, uid_t caller) {
    const bool token = static_cast<bool>(find(handle, caller).token);
    std::vector<Object> dropped;
    forget(objects_.find(handle), dropped);
    if (token) {
        for (auto it = objects_.begin(); it != objects_.end();) {
            if (it->second.key && it->second.key->token_handle == handle) {
                it = forget(it, dropped);
            } else {
                ++it;
            }
        }
    }
    return dropped;
}

std::vector<ObjectTable::Object> ObjectTable::erase_client(ClientId client) {
    if (client == kNoClient) {
        return {};
    }
    return erase_matching([client](const Object& object) { return object.client == client; });
}

std::vector<ObjectTable::Object>
ObjectTable::erase_matching(const std::function<bool(const Object&)>& match) {
    std::vector<Object> dropped;
    std::set<hsm::ObjectHandle> tokens; // the tokens that go: keys under them go too
    for (const auto& [handle, object] : objects_) {
        if (object.token && match(object)) {
            tokens.insert(handle);
        }
    }
    for (auto it = objects_.begin(); it != objects_.end();) {
        const auto& object = it->second;
        if (tokens.contains(it->first) ||
            (object.key && (tokens.contains(object.key->token_handle) || match(object)))) {
            it = forget(it, dropped);
        } else {
            ++it;
        }
    }
    return dropped;
}

std::map<hsm::ObjectHandle, ObjectTable::Object> ObjectTable::take_all() noexcept {
    held_.clear();
    return std::exchange(objects_, {});
}

} // namespace preloadrun::sim
