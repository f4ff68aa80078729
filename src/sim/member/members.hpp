#pragma once
// A fleet of PKCS#11 members: the configuration file, the members' modules,
// their catalog, and re-reading the file. Each member of the file is one
// module of the fleet, numbered in the order members first appear (a member
// removed keeps its number, and comes back under it if it is added again).
// Re-reading applies the differences: a member added joins (an add event),
// one taken out is removed, one whose settings changed is reset (its worker
// restarts), the token sets follow the file. The file is re-read on reload()
// (SIGHUP) and when it changes on disk.

#include "member/fleet_config.hpp"
#include "member/member_catalog.hpp"
#include "member/member_module.hpp"
#include "model/fleet.hpp"
#include "model/fleet_store.hpp"
#include "model/passphrase_limiter.hpp"
#include "preloadrun/common/fd.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace preloadrun::sim::member {

class MemberFleet {
public:
    // Reads the configuration (Error as load_fleet_config() throws), starts
    // a worker for every member and waits, at most the longest timeout of
    // the file, until each has answered or is failed. `program`: the
    // service's own program (it runs the workers).
    MemberFleet(std::filesystem::path config, const FleetOptions& options, std::string program);
    MemberFleet(const MemberFleet&) = delete;
    MemberFleet& operator=(const MemberFleet&) = delete;
    ~MemberFleet();

    Catalog& catalog() noexcept { return catalog_; }
    Fleet& fleet() noexcept { return *fleet_; }
    const std::filesystem::path& config_path() const noexcept { return path_; }

    // Re-reads the file and applies it. A file that cannot be read or is
    // invalid is logged and changes nothing; returns whether it applied.
    bool reload();

private:
    void apply(const FleetConfig& config);
    MemberModule& member_module(std::uint32_t number);
    void watch();

    const std::filesystem::path path_;
    const std::string program_;
    FleetConfig config_;
    MemoryFleetStore store_;
    MemberCatalog catalog_;
    PassphraseLimiter limiter_;
    const SecureBuffer digest_key_;
    MemberModules modules_;
    std::unique_ptr<Fleet> fleet_;
    std::map<std::string, std::uint32_t> numbers_; // every member ever, by name
    std::mutex reload_mutex_;
    Fd inotify_;
    Fd stop_;
    std::thread watcher_;
};

} // namespace preloadrun::sim::member
