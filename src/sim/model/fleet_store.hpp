#pragma once
// Where the fleet keeps its modules and their counters (generations,
// handles reserved): the Security World on disk for simulated HSMs
// (world.hpp), which makes them outlive a restart of the service; memory for
// PKCS#11 members (member/members.hpp), whose every start is a new epoch
// anyway (the instance id).

#include "model/world_format.hpp"

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace preloadrun::sim {

class FleetStore {
public:
    virtual ~FleetStore() = default;
    virtual std::vector<EnrolledModule> modules() const = 0;
    virtual std::optional<ModuleCounters> counters(std::uint32_t number) const = 0;
    // Each throws Error when it cannot record.
    virtual void save_counters(const std::vector<ModuleCounters>& changed) = 0;
    virtual void save_generation(std::uint32_t number, std::uint64_t generation) = 0;
    virtual void reserve_handles(std::uint32_t number, std::uint64_t below) = 0;
    // Enrols one more module (the next number) with `esn` ("": a new random one).
    virtual EnrolledModule enrol_module(const std::string& esn) = 0;
    // Where the counters are, for messages ("/var/lib/hsmsim/counters").
    virtual std::string where() const = 0;
};

// A FleetStore in memory.
class MemoryFleetStore final : public FleetStore {
public:
    std::vector<EnrolledModule> modules() const override;
    std::optional<ModuleCounters> counters(std::uint32_t number) const override;
    void save_counters(const std::vector<ModuleCounters>& changed) override;
    void save_generation(std::uint32_t number, std::uint64_t generation) override;
    void reserve_handles(std::uint32_t number, std::uint64_t below) override;
    EnrolledModule enrol_module(const std::string& esn) override;
    std::string where() const override { return "memory"; }

private:
    mutable std::mutex mutex_;
    std::vector<EnrolledModule> modules_;
    std::map<std::uint32_t, ModuleCounters> counters_;
};

} // namespace preloadrun::sim
