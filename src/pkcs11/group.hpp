#pragma once
// The modules this process uses: the load-sharing group. Every module ever
// seen is tracked (tokens::ModuleLimit: at most tokens::kMaxModules,
// counting ones that left); a member
// serves operations, a module that left does not until key reloading brings
// it back (without reloading, it stays out until restart: the baseline).

#include "preloadrun/tokens/module_limit.hpp"
#include "preloadrun/tokens/reader.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace preloadrun::pkcs11 {

struct ModuleRecord {
    std::uint32_t number = 0;
    std::string esn;
    std::uint64_t generation = 0; // the module generation our key handles belong to
    bool member = false;
    bool abandoned = false; // a reload was given up after the retry window
};

class Group {
public:
    // Adds a module not seen before (false when tokens::ModuleLimit refuses
    // it: logged once per module).
    bool track(std::uint32_t number, const std::string& esn, std::uint64_t generation);
    // Makes a tracked module a member (logs "joins").
    void join(std::uint32_t number, std::string_view why);
    // Takes a module out (logs "leaves" once). False when it was not a member.
    bool leave(std::uint32_t number, std::string_view why);
    void set_generation(std::uint32_t number, std::uint64_t generation);
    void abandon(std::uint32_t number, std::string_view why);

    std::optional<ModuleRecord> record(std::uint32_t number) const;
    std::vector<ModuleRecord> records() const;
    // The generation of each tracked module: what makes a handle of the
    // tokens file current (tokens::current_handles).
    tokens::Generations generations() const;
    // The members now, in number order.
    std::vector<std::uint32_t> members() const;
    bool is_member(std::uint32_t number) const;

    // Round-robin position for spreading operations.
    std::uint64_t next_turn() noexcept { return turn_.fetch_add(1, std::memory_order_relaxed); }

private:
    ModuleRecord* find(std::uint32_t number);
    const ModuleRecord* find(std::uint32_t number) const;

    mutable std::mutex mutex_;
    std::vector<ModuleRecord> modules_;
    tokens::ModuleLimit limit_;
    std::atomic<std::uint64_t> turn_{0};
};

} // namespace preloadrun::pkcs11
