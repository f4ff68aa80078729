#pragma once
// The state of one initialised module (between C_Initialize and
// C_Finalize): settings, connections, the group, slots, objects, sessions,
// routing and reloading. It wires the parts together and holds the
// procedures that span several of them (login, session close, object
// visibility); the parts themselves live in their own files.

#include "config.hpp"
#include "group.hpp"
#include "objects.hpp"
#include "pool.hpp"
#include "reloader.hpp"
#include "router.hpp"
#include "sessions.hpp"
#include "slots.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

namespace preloadrun::pkcs11 {

class Instance {
public:
    // What the instance reaches outside itself; tests give fakes.
    struct Seams {
        Pool::Connector connect; // a new connection to the HSM service
        const Clock* clock = &steady_clock();
        // Counts the tokens file's changes, for key reloading (null: an
        // inotify ReloadWatch). May throw: then keys are not reloaded.
        std::function<std::unique_ptr<ChangeCount>(const std::filesystem::path&)> watch;
    };

    // Connects to the HSM service, reads the world (modules, tokens, keys)
    // and the tokens file. `threads_allowed`: false when the application
    // said CKF_LIBRARY_CANT_CREATE_OS_THREADS.
    Instance(Config config, Seams seams, bool threads_allowed);
    Instance(const Instance&) = delete;
    Instance& operator=(const Instance&) = delete;
    ~Instance();

    const Config& config() const noexcept { return config_; }
    Group& group() noexcept { return group_; }
    Slots& slots() noexcept { return *slots_; }
    ObjectStore& objects() noexcept { return objects_; }
    Sessions& sessions() noexcept { return sessions_; }
    Router& router() noexcept { return *router_; }
    Pool& pool() noexcept { return pool_; }

    // Whether the fleet can do `kind`: every module usable when the world
    // was read (at start, after a restart of the service) offers it. What
    // the application sees in C_GetMechanismList is what all of them can do.
    bool offers(hsm::MechanismKind kind) const noexcept {
        return (lacked_.load(std::memory_order_relaxed) & bit(kind)) == 0;
    }

    // At each C_SignInit/VerifyInit/EncryptInit/DecryptInit.
    void before_operation_init() {
        router_->recover_if_needed();
        if (reloader_) {
            reloader_->check();
        }
    }

    // After the HSM service restarted (a new epoch of the pool): forgets what
    // belonged to its old instance (the reloader then brings the modules
    // back). Between the tries of an operation that waits for the service:
    // also asks the service whether it is back, and picks up the reloads.
    // Never throws.
    void recover() noexcept;

    void login(CK_SLOT_ID slot, CK_USER_TYPE user, std::span<const std::uint8_t> pin);
    // C_SetPIN: the softcard's passphrase changes in the world (every
    // module, every process; the next load needs the new one).
    void set_pin(CK_SLOT_ID slot, std::span<const std::uint8_t> old_pin,
                 std::span<const std::uint8_t> new_pin);
    void logout(CK_SLOT_ID slot);
    // Brings persistent objects in line with the world (keys made by others).
    void refresh_objects();
    // Private objects of a token are seen only after login.
    bool visible(const ObjectStore::Ref& ref, CK_SLOT_ID session_slot) const;
    // Closes a session: destroys the session objects it created.
    void closed(Session& session);
    CK_STATE session_state(const Session& session) const;

private:
    void read_tokens_file(const Bytes& instance);
    void revalidate();
    void note_mechanisms(const std::vector<hsm::ModuleInfo>& modules);
    static std::uint32_t bit(hsm::MechanismKind kind) noexcept {
        return 1U << static_cast<unsigned>(kind);
    }

    Config config_;
    Pool pool_;
    Group group_;
    std::unique_ptr<Slots> slots_;
    ObjectStore objects_;
    Sessions sessions_;
    std::unique_ptr<Router> router_;
    std::unique_ptr<Reloader> reloader_;
    tokens::FileVersion file_version_;
    std::mutex revalidate_mutex_;
    std::atomic<std::uint64_t> validated_epoch_{0}; // the pool's epoch our handles belong to
    std::atomic<std::uint32_t> lacked_{0};          // bit(kind): some usable module lacks it
};

} // namespace preloadrun::pkcs11
