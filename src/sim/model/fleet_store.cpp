#include "model/fleet_store.hpp"

namespace preloadrun::sim {

std::vector<EnrolledModule> MemoryFleetStore::modules() const {
    std::lock_guard lock(mutex_);
    return modules_;
}

std::optional<ModuleCounters> MemoryFleetStore::counters(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    auto it = counters_.find(number);
    return it == counters_.end() ? std::nullopt : std::optional(it->second);
}

void MemoryFleetStore::save_counters(const std::vector<ModuleCounters>& changed) {
    std::lock_guard lock(mutex_);
    for (const auto& c : changed) {
        counters_[c.number] = c;
    }
}

void MemoryFleetStore::save_generation(std::uint32_t number, std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    auto& c = counters_[number];
    c.number = number;
    c.generation = generation;
}

void MemoryFleetStore::reserve_handles(std::uint32_t number, std::uint64_t below) {
    std::lock_guard lock(mutex_);
    auto& c = counters_[number];
    c.number = number;
    c.handles = std::max(c.handles, below);
}

EnrolledModule MemoryFleetStore::enrol_module(const std::string& esn) {
    std::lock_guard lock(mutex_);
    EnrolledModule m{static_cast<std::uint32_t>(modules_.size() + 1), esn};
    modules_.push_back(m);
    return m;
}

} // namespace preloadrun::sim
