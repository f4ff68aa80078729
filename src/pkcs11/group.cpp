#include "group.hpp"

#include "log.hpp"

#include <algorithm>

namespace preloadrun::pkcs11 {

ModuleRecord* Group::find(std::uint32_t number) {
    for (auto& m : modules_) {
        if (m.number == number) {
            return &m;
        }
    }
    return nullptr;
}

const ModuleRecord* Group::find(std::uint32_t number) const {
    for (const auto& m : modules_) {
        if (m.number == number) {
            return &m;
        }
    }
    return nullptr;
}

bool Group::track(std::uint32_t number, const std::string& esn, std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    const auto verdict = limit_.admit(number);
    if (verdict == tokens::ModuleLimit::Verdict::refused) {
        logger().error("module {} (ESN {}) not used: this process already tracks {} modules, "
                       "the most it uses (modules that left count until restart)",
                       number, esn, tokens::kMaxModules);
    }
    if (verdict != tokens::ModuleLimit::Verdict::admitted) {
        return tokens::ModuleLimit::ok(verdict);
    }
    modules_.push_back(ModuleRecord{number, esn, generation, false, false});
    std::sort(modules_.begin(), modules_.end(),
              [](const auto& a, const auto& b) { return a.number < b.number; });
    return true;
}

void Group::join(std::uint32_t number, std::string_view why) {
    std::lock_guard lock(mutex_);
    auto* m = find(number);
    if (m == nullptr || m->member) {
        return;
    }
    m->member = true;
    m->abandoned = false;
    logger().info("module {} (ESN {}) joins the group: {}", number, m->esn, why);
}

bool Group::leave(std::uint32_t number, std::string_view why) {
    std::lock_guard lock(mutex_);
    auto* m = find(number);
    if (m == nullptr || !m->member) {
        return false;
    }
    m->member = false;
    logger().warn("module {} (ESN {}) leaves the group: {}", number, m->esn, why);
    return true;
}

void Group::set_generation(std::uint32_t number, std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    if (auto* m = find(number)) {
        m->generation = generation;
    }
}

void Group::abandon(std::uint32_t number, std::string_view why) {
    std::lock_guard lock(mutex_);
    auto* m = find(number);
    if (m == nullptr || m->abandoned) {
        return;
    }
    m->abandoned = true;
    m->member = false;
    logger().error("module {} (ESN {}) abandoned: {}", number, m->esn, why);
}

std::optional<ModuleRecord> Group::record(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    if (const auto* m = find(number)) {
        return *m;
    }
    return std::nullopt;
}

std::vector<ModuleRecord> Group::records() const {
    std::lock_guard lock(mutex_);
    return modules_;
}

tokens::Generations Group::generations() const {
    std::lock_guard lock(mutex_);
    tokens::Generations out;
    for (const auto& m : modules_) {
        out[m.number] = m.generation;
    }
    return out;
}

std::vector<std::uint32_t> Group::members() const {
    std::lock_guard lock(mutex_);
    std::vector<std::uint32_t> out;
    for (const auto& m : modules_) {
        if (m.member) {
            out.push_back(m.number);
        }
    }
    return out;
}

bool Group::is_member(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    const auto* m = find(number);
    return m != nullptr && m->member;
}

} // namespace preloadrun::pkcs11
