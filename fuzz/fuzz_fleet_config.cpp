// libFuzzer target: the fleet configuration of PKCS#11 members
// (sim/member/fleet_config.hpp), which `hsmsim serve --fleet` reads at start,
// on SIGHUP and whenever the file changes. Anything but preloadrun::Error
// escaping the parser, a crash or a sanitizer report is a bug; so is a
// configuration it accepts that breaks what it promises (a set naming a
// member that is not there, a member in two sets, a relative library).

#include "member/fleet_config.hpp"
#include "preloadrun/common/error.hpp"

#include <cstdlib>
#include <set>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace member = preloadrun::sim::member;
    const std::string text(reinterpret_cast<const char*>(data), size);
    member::FleetConfig config;
    try {
        config = member::parse_fleet_config(text, "fuzz.toml");
    } catch (const preloadrun::Error&) {
        return 0;
    }
    std::set<std::string> placed;
    for (const auto& set : config.sets) {
        for (const auto& name : set.members) {
            if (config.member(name) == nullptr || !placed.insert(name).second) {
                std::abort();
            }
        }
    }
    for (const auto& m : config.members) {
        if (m.library.empty() || m.library.front() != '/' || m.max_sessions < 1 ||
            m.max_sessions > 64 || m.timeout.count() < 100) {
            std::abort();
        }
    }
    return 0;
}
