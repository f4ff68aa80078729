#include "lifecycle.hpp"

#include "log.hpp"

#include <mutex>
#include <new>
#include <pthread.h>
#include <string>
#include <unistd.h>

namespace preloadrun::pkcs11 {

namespace {

struct Global {
    std::mutex mutex; // held only to swap or copy the pointer, never across a call
    std::shared_ptr<Instance> instance;
    pid_t pid = 0;  // the process that initialised `instance`
    pid_t self = 0; // this process: set by C_Initialize, and again in a forked child
};

Global& global() {
    // Never destroyed: entry points may run during the application's exit.
    static auto* g = new Global;
    return *g;
}

void prepare_fork() noexcept {
    global().mutex.lock();
}
void after_fork() noexcept {
    global().mutex.unlock();
}
void after_fork_in_child() noexcept {
    global().self = ::getpid();
    global().mutex.unlock();
}

// Every entry point asks whether the instance is this process's; the handler
// keeps the answer to hand, so that they make no getpid() system call.
void register_fork_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        {
            std::lock_guard lock(global().mutex);
            global().self = ::getpid();
        }
        ::pthread_atfork(prepare_fork, after_fork, after_fork_in_child);
    });
}

// Parses the initialise arguments (the four forms of PKCS#11 v2.40 section
// 11.4). Returns whether the module may create threads.
bool check_arguments(CK_VOID_PTR args) {
    if (args == nullptr) {
        return true; // no arguments: single-threaded application, OS locking is fine
    }
    const auto* a = static_cast<const CK_C_INITIALIZE_ARGS*>(args);
    if (a->pReserved != nullptr) {
        throw CkError(CKR_ARGUMENTS_BAD, "CK_C_INITIALIZE_ARGS.pReserved must be NULL");
    }
    const int given = (a->CreateMutex != nullptr) + (a->DestroyMutex != nullptr) +
                      (a->LockMutex != nullptr) + (a->UnlockMutex != nullptr);
    if (given != 0 && given != 4) {
        throw CkError(CKR_ARGUMENTS_BAD, "mutex functions must be all given or none");
    }
    if (given == 4 && (a->flags & CKF_OS_LOCKING_OK) == 0) {
        // The application insists on its own mutex functions; the module
        // locks with the OS's primitives only.
        throw CkError(CKR_CANT_LOCK, "only OS locking is supported (set CKF_OS_LOCKING_OK)");
    }
    return (a->flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS) == 0;
}

// The Instance, from the environment and the HSM service. A failure here
// is the environment's, not the application's (no service, a refused
// socket, ...): it is told in one line whatever the log settings, for the
// application itself shows at most a CK_RV.
std::shared_ptr<Instance> start(bool threads_allowed) {
    const auto failed = [](CK_RV rv, const char* why) {
        notice(spdlog::level::err, std::string("C_Initialize failed: ") + why);
        return CkError(rv, why, CkError::Reported::yes);
    };
    try {
        Config config = Config::from_environment();
        const hsm::Endpoint endpoint = config.endpoint;
        Instance::Seams seams;
        seams.connect = [endpoint] { return hsm::connect(endpoint); };
        return std::make_shared<Instance>(std::move(config), std::move(seams), threads_allowed);
    } catch (const CkError& e) {
        throw failed(e.rv(), e.what());
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const Error& e) {
        throw failed(CKR_FUNCTION_FAILED, e.what());
    } catch (const std::exception& e) {
        throw failed(CKR_GENERAL_ERROR, e.what());
    }
}

} // namespace

void initialize(CK_VOID_PTR args) {
    register_fork_handlers();
    (void)logger(); // sets up logging (off unless asked for) before the shared code logs
    const bool threads_allowed = check_arguments(args);
    auto& g = global();
    {
        std::lock_guard lock(g.mutex);
        if (g.instance) {
            if (g.pid == g.self) {
                throw CkError(CKR_CRYPTOKI_ALREADY_INITIALIZED, "already initialised");
            }
            // Inherited through fork: leave the parent's state alone, forever.
            new std::shared_ptr<Instance>(std::move(g.instance));
            g.instance.reset();
        }
    }
    auto instance = start(threads_allowed);
    std::lock_guard lock(g.mutex);
    if (g.instance && g.pid == g.self) {
        throw CkError(CKR_CRYPTOKI_ALREADY_INITIALIZED, "initialised by another thread meanwhile");
    }
    g.instance = std::move(instance);
    g.pid = g.self;
}

void finalize(CK_VOID_PTR reserved) {
    if (reserved != nullptr) {
        throw CkError(CKR_ARGUMENTS_BAD, "C_Finalize argument must be NULL");
    }
    auto& g = global();
    std::shared_ptr<Instance> old;
    {
        std::lock_guard lock(g.mutex);
        if (!g.instance || g.pid != g.self) {
            throw CkError(CKR_CRYPTOKI_NOT_INITIALIZED, "not initialised");
        }
        old = std::move(g.instance);
        g.instance.reset();
    }
    // Calls still running in other threads hold their own reference; the
    // state goes when the last of them returns.
}

std::shared_ptr<Instance> current() {
    auto& g = global();
    std::lock_guard lock(g.mutex);
    if (!g.instance || g.pid != g.self) {
        throw CkError(CKR_CRYPTOKI_NOT_INITIALIZED, "C_Initialize has not been called");
    }
    return g.instance;
}

} // namespace preloadrun::pkcs11
