#include "model/passphrase_limiter.hpp"

#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace preloadrun::sim {

std::string seconds_text(std::chrono::milliseconds wait) {
    const auto seconds = std::max<std::chrono::seconds::rep>(
        1, std::chrono::ceil<std::chrono::seconds>(wait).count());
    return std::to_string(seconds) + " s";
}

PassphraseDigest passphrase_digest(const SecureBuffer& key, const SecureBuffer& passphrase) {
    PassphraseDigest out{};
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), passphrase.data(),
             passphrase.size(), out.data(), &len) == nullptr ||
        len != out.size()) {
        throw Error(ErrorCode::crypto, "cannot compute a passphrase digest");
    }
    return out;
}

std::chrono::milliseconds PassphraseLimiter::delay(std::uint32_t failures) const {
    auto d = policy_.first_delay;
    for (auto n = policy_.free_tries; n < failures && d < policy_.max_delay; ++n) {
        d *= 2;
    }
    return std::min(d, policy_.max_delay);
}

std::optional<std::chrono::milliseconds>
PassphraseLimiter::refused_for(const Entry& entry, Clock::time_point now) const {
    if (entry.failures < policy_.free_tries) {
        return std::nullopt;
    }
    const auto until = entry.last_failure + delay(entry.failures);
    if (now >= until) {
        return std::nullopt;
    }
    return std::chrono::ceil<std::chrono::milliseconds>(until - now);
}

bool PassphraseLimiter::forgotten(const Entry& entry, Clock::time_point now) const {
    const auto keep = std::max(policy_.forget_after, policy_.max_delay);
    return entry.in_flight == 0 && now - entry.last_failure >= keep;
}

void PassphraseLimiter::make_room(Clock::time_point now) {
    if (entries_.size() < policy_.max_entries) {
        return;
    }
    std::erase_if(entries_, [&](const auto& e) { return forgotten(e.second, now); });
    if (entries_.size() < policy_.max_entries) {
        return;
    }
    // Still full: the pair whose last failure is the oldest goes.
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->second.in_flight == 0 &&
            (oldest == entries_.end() || it->second.last_failure < oldest->second.last_failure)) {
            oldest = it;
        }
    }
    if (oldest != entries_.end()) {
        entries_.erase(oldest);
    }
}

std::map<PassphraseLimiter::Key, PassphraseLimiter::Entry>::iterator
PassphraseLimiter::entry_for(const Key& key, Clock::time_point now) {
    auto it = entries_.find(key);
    if (it != entries_.end() && forgotten(it->second, now)) {
        entries_.erase(it);
        it = entries_.end();
    }
    if (it == entries_.end()) {
        make_room(now);
        it = entries_.emplace(key, Entry{}).first;
    }
    return it;
}

PassphraseLimiter::Admission PassphraseLimiter::admit(uid_t uid, const Bytes& token,
                                                      const PassphraseDigest& digest) {
    std::lock_guard lock(mutex_);
    const auto now = clock_.now();
    auto it = entry_for(Key{uid, token}, now);
    auto& entry = it->second;
    if (auto wait = refused_for(entry, now)) {
        return {Verdict::refused, *wait};
    }
    if (std::find(entry.wrong.begin(), entry.wrong.end(), digest) != entry.wrong.end()) {
        return {Verdict::known_wrong, {}};
    }
    const std::uint32_t allowed =
        entry.failures < policy_.free_tries ? policy_.free_tries - entry.failures : 1;
    if (entry.in_flight >= allowed) {
        return {Verdict::refused, policy_.first_delay};
    }
    ++entry.in_flight;
    return {Verdict::check, {}};
}

std::optional<std::chrono::milliseconds> PassphraseLimiter::finished(uid_t uid, const Bytes& token,
                                                                     const PassphraseDigest& digest,
                                                                     Outcome outcome) {
    std::lock_guard lock(mutex_);
    const auto now = clock_.now();
    auto it = entries_.try_emplace(Key{uid, token}).first;
    auto& entry = it->second;
    if (entry.in_flight > 0) {
        --entry.in_flight;
    }
    std::optional<std::chrono::milliseconds> locked;
    switch (outcome) {
    case Outcome::right:
        entry.failures = 0;
        entry.wrong.clear();
        break;
    case Outcome::wrong:
        if (std::find(entry.wrong.begin(), entry.wrong.end(), digest) != entry.wrong.end()) {
            break; // counted when it first failed
        }
        ++entry.failures;
        entry.last_failure = now;
        entry.wrong.push_back(digest);
        if (entry.wrong.size() > policy_.max_remembered) {
            entry.wrong.erase(entry.wrong.begin());
        }
        if (entry.failures >= policy_.free_tries) {
            locked = delay(entry.failures);
        }
        break;
    case Outcome::undecided:
        break;
    }
    if (entry.failures == 0 && entry.in_flight == 0) {
        entries_.erase(it);
    }
    return locked;
}

std::uint32_t PassphraseLimiter::failures(uid_t uid, const Bytes& token) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(Key{uid, token});
    return it == entries_.end() ? 0 : it->second.failures;
}

std::size_t PassphraseLimiter::pairs() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

} // namespace preloadrun::sim
