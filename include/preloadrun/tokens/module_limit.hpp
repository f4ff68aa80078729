#pragma once
// Which modules a party of the contract tracks. preloadrun (the file's
// modules) and the PKCS#11 module (its group) apply the same rule: every
// module ever seen is tracked, at most kMaxModules of them, and a module that
// was removed, failed or left still counts until the process restarts (its
// number may come back, and what was known of it must not be mistaken for a
// newcomer's). A module past the limit is refused, and said once.

#include "preloadrun/tokens/tokens_file.hpp"

#include <cstdint>
#include <set>

namespace preloadrun::tokens {

class ModuleLimit {
public:
    enum class Verdict {
        tracked,       // known already
        admitted,      // new, and tracked from now on
        refused,       // new, and over the limit: the first time for this number
        refused_again, // refused before: not worth another message
    };

    // Not thread-safe: the caller serialises (each party has one owner
    // thread or a lock around its modules).
    Verdict admit(std::uint32_t number);
    static bool ok(Verdict verdict) noexcept {
        return verdict == Verdict::tracked || verdict == Verdict::admitted;
    }
    bool tracks(std::uint32_t number) const { return tracked_.count(number) != 0; }
    std::size_t size() const noexcept { return tracked_.size(); }

private:
    std::set<std::uint32_t> tracked_;
    std::set<std::uint32_t> refused_;
};

} // namespace preloadrun::tokens
