#pragma once
// Key reloading (CKNFAST_RELOAD_KEYS). check() runs at each C_SignInit,
// C_VerifyInit, C_EncryptInit and C_DecryptInit; when the watcher saw no
// change and no reload is pending it is two relaxed atomic loads. When the
// tokens file changed, it is re-read: tokens newly loaded on a module (new
// handle or module generation) get their keys reloaded there, cleared
// modules (new generation) get their module-protected keys back, new modules
// join (at most tokens::kMaxModules ever). A reload that fails is retried at each
// check for the retry window, then that module is abandoned (one log line).
// Session keys are never reloaded. A file whose owner died is reported once;
// what is loaded keeps serving.
//
// A restart of the HSM service (a new instance, Pool::epoch()) is a reset of
// every module: service_restarted() forgets every handle, lets the usable
// modules serve again (keys load there as they are used) and takes the
// tokens' handles from the tokens file once it names the new instance.

#include "group.hpp"
#include "objects.hpp"
#include "preloadrun/common/retry.hpp"
#include "preloadrun/tokens/liveness.hpp"
#include "preloadrun/tokens/reader.hpp"
#include "preloadrun/tokens/tokens_file.hpp"
#include "reload_watch.hpp"
#include "router.hpp"
#include "slots.hpp"

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

namespace preloadrun::pkcs11 {

// After a restart of the HSM service: forgets every handle held in its old
// instance (keys, tokens; session keys are lost), records the generations of
// `modules` (those of the new instance) and takes every module out of the
// group, for reloading to bring back.
void forget_service_instance(Group& group, Slots& slots, ObjectStore& objects,
                             const std::vector<hsm::ModuleInfo>& modules);

class Reloader {
public:
    struct Parts {
        Group& group;
        Slots& slots;
        ObjectStore& objects;
        Router& router;
    };
    // `changes` counts the file's changes (a ReloadWatch; tests count by
    // hand). `clock`: the retry windows, and when to read a file again.
    Reloader(std::filesystem::path file, Parts parts, const Clock& clock,
             std::chrono::milliseconds retry_window, std::unique_ptr<ChangeCount> changes,
             tokens::FileVersion initial_file);

    // The hot path.
    void check() {
        const std::uint64_t v = current_version();
        if (v == seen_.load(std::memory_order_relaxed) && !pending_.load(std::memory_order_relaxed))
            [[likely]] {
            return;
        }
        slow_path(v);
    }

    // The HSM service restarted: `modules` are those of its new instance,
    // whose epoch (Pool::epoch()) is `epoch`.
    void service_restarted(const std::vector<hsm::ModuleInfo>& modules, std::uint64_t epoch);

private:
    std::uint64_t current_version() const noexcept { return changes_->version(); }
    void slow_path(std::uint64_t version);
    // Applies a tokens file (the slow path once the file was read and found
    // live, and names the service instance this process uses).
    void apply(const tokens::TokensFile& file);
    // Retries pending reloads, abandons those whose window passed.
    void retry_pending();
    void reread();
    // Loads every key in use onto `module`; joins it to the group when all
    // loaded, else opens (or keeps) its retry window.
    void reload_module(std::uint32_t module, const std::string& why);
    void forget_module(std::uint32_t module);
    // Whether the file's handles belong to the instance of the service this
    // process uses now (else they are re-read later).
    bool same_instance(const tokens::TokensFile& file);
    void update_pending() noexcept;

    std::filesystem::path file_;
    Parts parts_;
    std::unique_ptr<ChangeCount> changes_;
    std::atomic<std::uint64_t> seen_{0};
    std::atomic<bool> pending_{false};
    std::mutex mutex_; // one reload at a time; others carry on without waiting
    RetryWindows retries_;
    std::map<std::uint32_t, std::string> retry_reason_;
    tokens::FileVersion file_version_;
    std::uint64_t epoch_;              // of the service instance the handles belong to
    bool reread_pending_ = false;      // the file named another instance: read it again
    Clock::time_point reread_after_{}; // not before this (it is read again at most every 50 ms)
    bool other_instance_reported_ = false;
    const Clock& clock_;
    bool owner_dead_reported_ = false;
    std::set<std::uint32_t> file_unusable_; // modules the file last called not usable
};

} // namespace preloadrun::pkcs11
