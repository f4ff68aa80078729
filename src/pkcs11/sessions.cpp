#include "sessions.hpp"

namespace preloadrun::pkcs11 {

std::shared_ptr<Session> Sessions::open(CK_SLOT_ID slot, CK_FLAGS flags) {
    auto session = std::make_shared<Session>();
    session->slot = slot;
    session->flags = flags;
    std::unique_lock lock(mutex_);
    session->handle = next_++;
    sessions_[session->handle] = session;
    return session;
}

std::shared_ptr<Session> Sessions::get(CK_SESSION_HANDLE handle) const {
    std::shared_lock lock(mutex_);
    auto it = sessions_.find(handle);
    if (it == sessions_.end()) {
        throw CkError(CKR_SESSION_HANDLE_INVALID, "no session " + std::to_string(handle));
    }
    return it->second;
}

std::shared_ptr<Session> Sessions::close(CK_SESSION_HANDLE handle) {
    std::unique_lock lock(mutex_);
    auto it = sessions_.find(handle);
    if (it == sessions_.end()) {
        throw CkError(CKR_SESSION_HANDLE_INVALID, "no session " + std::to_string(handle));
    }
    auto session = std::move(it->second);
    sessions_.erase(it);
    return session;
}

std::vector<std::shared_ptr<Session>> Sessions::close_all(CK_SLOT_ID slot) {
    std::unique_lock lock(mutex_);
    std::vector<std::shared_ptr<Session>> out;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
        if (it->second->slot == slot) {
            out.push_back(std::move(it->second));
            it = sessions_.erase(it);
        } else {
            ++it;
        }
    }
    return out;
}

CK_ULONG Sessions::count(CK_SLOT_ID slot, bool rw_only) const {
    std::shared_lock lock(mutex_);
    CK_ULONG n = 0;
    for (const auto& [handle, session] : sessions_) {
        if (session->slot == slot && (!rw_only || (session->flags & CKF_RW_SESSION) != 0)) {
            ++n;
        }
    }
    return n;
}

} // namespace preloadrun::pkcs11
