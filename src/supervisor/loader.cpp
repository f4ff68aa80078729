#include "supervisor/loader.hpp"

#include "preloadrun/common/log.hpp"

#include <future>

namespace preloadrun::supervisor {

Loader::Loader(hsm::Endpoint endpoint, std::vector<hsm::TokenInfo> tokens,
               std::vector<SecureBuffer> passphrases)
    : endpoint_(std::move(endpoint)), tokens_(std::move(tokens)),
      passphrases_(std::move(passphrases)) {}

ModuleLoad Loader::load_module(std::uint32_t module) const {
    ModuleLoad result;
    result.module = module;
    auto start = std::chrono::steady_clock::now();
    std::unique_ptr<hsm::Service> service;
    try {
        if (passphrases_.size() != tokens_.size()) {
            throw Error(ErrorCode::internal, "the passphrases were wiped after the first load "
                                             "(--no-ha): nothing can be loaded again");
        }
        service = hsm::connect(endpoint_);
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
    result.took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    return result;
}

std::vector<ModuleLoad>
Loader::load_modules(const std::vector<std::uint32_t>& modules,
                     const std::function<void(std::size_t, std::size_t)>& progress) const {
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
            pending.push_back(std::async(std::launch::async, [this, module = module, &handles] {
                unload_module(module, handles);
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
    try {
        auto service = hsm::connect(endpoint_);
        for (const auto& [token, handle] : handles) {
            try {
                service->unload(module, handle);
            } catch (const Error& e) {
                log::get("supervisor")
                    ->debug("unload of handle {} on module {}: {}", handle, module, e.what());
            }
        }
    } catch (const std::exception& e) {
        log::get("supervisor")
            ->warn("could not unload the tokens from module {}: {}", module, e.what());
    }
}

} // namespace preloadrun::supervisor
