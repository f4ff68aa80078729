#include "loader.hpp"

#include "preloadrun/common/log.hpp"

#include <future>
#include <thread>

namespace preloadrun::supervisor {

namespace {
constexpr int kUnloadAttempts = 5; // 25 + 50 + 100 + 200 ms between them
} // namespace

Loader::Loader(Connector connect, std::vector<hsm::TokenInfo> tokens,
               std::vector<SecureBuffer> passphrases, const Clock& clock)
    : connect_(std::move(connect)), tokens_(std::move(tokens)),
      passphrases_(std::move(passphrases)), clock_(clock) {}

ModuleLoad Loader::load_module(std::uint32_t module) const {
    ModuleLoad result;
    result.module = module;
    if (tokens_.empty()) {
        return result; // nothing to load: no connection, no wait
    }
    const auto start = clock_.now();
    std::unique_ptr<hsm::Service> service;
    try {
        if (passphrases_.size() != tokens_.size()) {
            throw Error(ErrorCode::internal, "the passphrases were wiped after the first load "
                                             "(--no-ha): nothing can be loaded again");
        }
        service = connect_();
        result.instance = service->instance();
        for (std::size_t t = 0; t < tokens_.size(); ++t) {
            result.failed_token = t;
            result.handles[t] = service->load_token(module, tokens_[t].hash, passphrases_[t]);
        }
        result.failed_token.reset();
    } catch (const Error& e) {
        result.error = e;
    } catch (const std::exception& e) {
        result.error = Error(ErrorCode::internal, e.what());
    }
    if (result.error) {
        for (const auto& [token, handle] : result.handles) {
            try {
                if (service) {
                    service->unload(module, handle);
                }
            } catch (const Error&) {
                // The module may have been cleared meanwhile: nothing to unload.
            }
        }
        result.handles.clear();
    }
    result.took = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - start);
    return result;
}

std::vector<ModuleLoad>
Loader::load_modules(const std::vector<std::uint32_t>& modules,
                     const std::function<void(std::size_t, std::size_t)>& progress) const {
    if (tokens_.empty()) {
        // Nothing to load: no thread, no connection.
        std::vector<ModuleLoad> results;
        for (auto module : modules) {
            results.push_back(load_module(module));
        }
        return results;
    }
    std::vector<std::future<ModuleLoad>> pending;
    pending.reserve(modules.size());
    for (auto module : modules) {
        pending.push_back(
            std::async(std::launch::async, [this, module] { return load_module(module); }));
    }
    std::vector<ModuleLoad> results;
    results.reserve(modules.size());
    for (auto& future : pending) {
        while (future.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
            if (progress) {
                std::size_t done = results.size();
                for (auto& other : pending) {
                    if (&other != &future && other.valid() &&
                        other.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
                        ++done;
                    }
                }
                progress(std::min(done, modules.size()), modules.size());
            }
        }
        results.push_back(future.get());
    }
    return results;
}

void Loader::forget_passphrases() noexcept {
    passphrases_.clear(); // each SecureBuffer wipes itself
    passphrases_.shrink_to_fit();
}

void Loader::unload(const std::map<std::uint32_t, std::map<std::size_t, hsm::ObjectHandle>>& loaded)
    const noexcept {
    // One connection per module, in parallel: a slow module delays only itself.
    std::vector<std::future<void>> pending;
    for (const auto& [module, handles] : loaded) {
        if (handles.empty()) {
            continue;
        }
        try {
            // Named copies: clang 14 cannot capture structured bindings.
            pending.push_back(
                std::async(std::launch::async, [this, module = module, &held = handles] {
                    unload_module(module, held);
                }));
        } catch (const std::exception& e) {
            log::get("supervisor")
                ->warn("could not unload the tokens from module {}: {}", module, e.what());
        }
    }
    for (auto& future : pending) {
        future.wait();
    }
}

void Loader::unload_module(std::uint32_t module,
                           const std::map<std::size_t, hsm::ObjectHandle>& handles) const noexcept {
    auto log = log::get("supervisor");
    try {
        auto service = connect_();
        for (const auto& [token, handle] : handles) {
            const auto name = token < tokens_.size() ? hsm::describe(tokens_[token])
                                                     : "token " + std::to_string(token);
            // A transient failure is tried again, a few times over about a
            // second; a module cleared, failed or removed has nothing left.
            auto delay = std::chrono::milliseconds(25);
            for (int attempt = 1;; ++attempt) {
                try {
                    service->unload(module, handle);
                    break;
                } catch (const Error& e) {
                    if (e.code() == ErrorCode::invalid_handle ||
                        e.code() == ErrorCode::module_not_usable) {
                        log->debug("{} on module {}: nothing to unload ({})", name, module,
                                   e.what());
                        break;
                    }
                    if (e.code() != ErrorCode::transient || attempt == kUnloadAttempts) {
                        log->warn("{} could not be unloaded from module {} (handle {}): {}; the "
                                  "HSM service frees it when this process has gone",
                                  name, module, handle, e.what());
                        break;
                    }
                    log->debug("unloading {} from module {} failed ({}); trying again", name,
                               module, e.what());
                    std::this_thread::sleep_for(delay);
                    delay *= 2;
                }
            }
        }
    } catch (const std::exception& e) {
        log->warn("could not unload the tokens from module {}: {}; the HSM service frees them "
                  "when this process has gone",
                  module, e.what());
    }
}

} // namespace preloadrun::supervisor
