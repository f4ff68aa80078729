#include "slots.hpp"

#include "preloadrun/common/bytes.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace preloadrun::pkcs11 {

namespace {

// PKCS#11 strings: blank-padded, not NUL-terminated.
template <std::size_t N> void pad(CK_UTF8CHAR (&field)[N], std::string_view text) {
    std::memset(field, ' ', N);
    std::memcpy(field, text.data(), std::min(N, text.size()));
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

} // namespace

Slots::Slots(std::vector<hsm::TokenInfo> tokens, bool load_sharing) : load_sharing_(load_sharing) {
    tokens_.emplace_back(std::nullopt);
    for (auto& t : tokens) {
        tokens_.emplace_back(std::move(t));
    }
    state_.resize(tokens_.size());
}

void Slots::check(CK_SLOT_ID slot) const {
    if (slot >= tokens_.size()) {
        throw CkError(CKR_SLOT_ID_INVALID, "no slot " + std::to_string(slot));
    }
}

const std::optional<hsm::TokenInfo>& Slots::token(CK_SLOT_ID slot) const {
    check(slot);
    return tokens_[slot];
}

std::optional<CK_SLOT_ID> Slots::slot_of_token(const Bytes& hash) const {
    for (CK_SLOT_ID i = 1; i < tokens_.size(); ++i) {
        if (tokens_[i]->hash == hash) {
            return i;
        }
    }
    return std::nullopt;
}

std::optional<CK_SLOT_ID> Slots::slot_of_token_hex(const std::string& hash_hex) const {
    const std::string want = lower(hash_hex);
    for (CK_SLOT_ID i = 1; i < tokens_.size(); ++i) {
        if (to_hex(tokens_[i]->hash) == want) {
            return i;
        }
    }
    return std::nullopt;
}

std::optional<CK_SLOT_ID> Slots::slot_of(const hsm::KeyInfo& key) const {
    if (!key.token) {
        return kAcceleratorSlot;
    }
    return slot_of_token(key.token->hash);
}

void Slots::slot_info(CK_SLOT_ID slot, CK_SLOT_INFO& info) const {
    check(slot);
    std::memset(&info, 0, sizeof info);
    std::string description = "preloadrun ";
    if (slot == kAcceleratorSlot) {
        description += load_sharing_ ? "load-shared HSM modules" : "HSM module";
    } else {
        description += std::string(hsm::to_string(tokens_[slot]->type)) + " " + tokens_[slot]->name;
    }
    pad(info.slotDescription, description);
    pad(info.manufacturerID, "preloadrun");
    info.flags = CKF_TOKEN_PRESENT | CKF_HW_SLOT;
    info.hardwareVersion = {0, 1};
    info.firmwareVersion = {0, 1};
}

void Slots::token_info(CK_SLOT_ID slot, CK_TOKEN_INFO& info) const {
    check(slot);
    std::memset(&info, 0, sizeof info);
    if (slot == kAcceleratorSlot) {
        pad(info.label, load_sharing_ ? "loadshared accelerator" : "accelerator");
        pad(info.model, "hsmsim");
        pad(info.serialNumber, "accelerator");
        info.flags = CKF_RNG | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED;
    } else {
        const auto& t = *tokens_[slot];
        pad(info.label, t.name);
        pad(info.model, t.type == hsm::TokenType::softcard ? "softcard" : "cardset");
        pad(info.serialNumber, to_hex(t.hash).substr(0, 16));
        info.flags =
            CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
    }
    pad(info.manufacturerID, "preloadrun");
    info.ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    info.ulSessionCount = CK_UNAVAILABLE_INFORMATION;
    info.ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    info.ulRwSessionCount = CK_UNAVAILABLE_INFORMATION;
    info.ulMaxPinLen = 1024;
    info.ulMinPinLen = 0;
    info.ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info.hardwareVersion = {0, 1};
    info.firmwareVersion = {0, 1};
    pad(info.utcTime, "");
}

void Slots::set_preloaded(CK_SLOT_ID slot, bool preloaded) {
    check(slot);
    std::lock_guard lock(mutex_);
    state_[slot].preloaded = preloaded;
}

bool Slots::preloaded(CK_SLOT_ID slot) const {
    check(slot);
    std::lock_guard lock(mutex_);
    return state_[slot].preloaded;
}

bool Slots::logged_in(CK_SLOT_ID slot) const {
    check(slot);
    std::lock_guard lock(mutex_);
    return state_[slot].logged_in;
}

void Slots::set_logged_in(CK_SLOT_ID slot, bool logged_in) {
    check(slot);
    std::lock_guard lock(mutex_);
    state_[slot].logged_in = logged_in;
}

std::optional<TokenHandle> Slots::handle(CK_SLOT_ID slot, std::uint32_t module) const {
    check(slot);
    std::lock_guard lock(mutex_);
    const auto& h = state_[slot].handles;
    auto it = h.find(module);
    if (it == h.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::map<std::uint32_t, TokenHandle> Slots::handles(CK_SLOT_ID slot) const {
    check(slot);
    std::lock_guard lock(mutex_);
    return state_[slot].handles;
}

void Slots::set_handle(CK_SLOT_ID slot, std::uint32_t module, TokenHandle handle) {
    check(slot);
    std::lock_guard lock(mutex_);
    state_[slot].handles[module] = handle;
}

void Slots::forget_handle(CK_SLOT_ID slot, std::uint32_t module) {
    check(slot);
    std::lock_guard lock(mutex_);
    state_[slot].handles.erase(module);
}

} // namespace preloadrun::pkcs11
