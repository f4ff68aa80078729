#include "model/world.hpp"

#include "model/world_files.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun::sim {

using namespace world_files;

namespace {

std::string new_esn() {
    std::string hex = to_hex(random_bytes(6));
    std::string esn;
    for (std::size_t i = 0; i < hex.size(); ++i) {
        if (i > 0 && i % 4 == 0) {
            esn += '-';
        }
        esn += static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i])));
    }
    return esn;
}

bool ignorable_entry(const std::string& name) {
    // Our lock file, and temporary files left by an interrupted atomic write.
    return name == ".lock" || (name.starts_with('.') && name.find(".tmp.") != std::string::npos);
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// The world holds the wrapped keys and each token's KDF salt and wrapped
// token key: whoever reads them can guess passphrases offline, and whoever
// writes there can destroy or plant keys. Only its owner may do either.
void require_private(const Dir& dir, uid_t owner) {
    const auto st = dir.status();
    const std::string path = dir.path().string();
    if (st.st_uid != owner) {
        throw Error(ErrorCode::permission,
                    "the Security World directory " + path + " belongs to uid " +
                        std::to_string(st.st_uid) + ", not to uid " + std::to_string(owner) +
                        " that runs hsmsim serve: run it as its owner, or run chown -R " +
                        std::to_string(owner) + " " + path);
    }
    if ((st.st_mode & 077) != 0) {
        throw Error(ErrorCode::permission,
                    "the Security World directory " + path + " has mode " + mode_text(st.st_mode) +
                        ": other users may read or change the keys in it; run chmod -R go-rwx " +
                        path);
    }
}

} // namespace

std::string new_ident() {
    return to_hex(random_bytes(kIdentSize));
}

World::World(const WorldOptions& options)
    : kdf_iterations_(options.kdf_iterations), usage_(options.limits) {
    if (options.dir.empty()) {
        throw Error(ErrorCode::usage, "no Security World directory given (set NFAST_KMDATA or "
                                      "use --kmdata)");
    }
    if (kdf_iterations_ == 0 || kdf_iterations_ > kMaxKdfIterations) {
        throw Error(ErrorCode::usage, "KDF iteration count out of range");
    }
    dir_ = Dir::open_or_create(options.dir, kDirMode);
    require_private(dir_, options.owner.value_or(::geteuid()));
    // Refuse a foreign directory before leaving anything (the lock file) in it.
    if (!dir_.stat_entry("world")) {
        refuse_foreign_directory();
    }
    take_lock();
    if (dir_.stat_entry("world")) {
        open_world();
    } else {
        create_world();
    }
    count_files();
}

std::string World::path_of(std::string_view name) const {
    return (dir_ / name).string();
}

std::string World::read_file(const std::string& name, const std::string& missing) const {
    try {
        return dir_.read_text(name, kMaxFile);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found,
                        missing + " in the Security World " + dir_.path().string());
        }
        throw;
    }
}

void World::refuse_foreign_directory() const {
    for (const auto& name : dir_.list()) {
        if (!ignorable_entry(name)) {
            throw Error(ErrorCode::usage,
                        dir_.path().string() +
                            " is not empty and holds no Security World (no 'world' file; found '" +
                            name +
                            "'); point NFAST_KMDATA at an hsmsim world or an empty directory");
        }
    }
}

void World::take_lock() {
    const auto lock_path = path_of(".lock");
    lock_ = dir_.open_entry(".lock", O_RDWR | O_CREAT, kFileMode);
    if (!lock_) {
        throw_errno("cannot open lock file " + lock_path);
    }
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw Error(ErrorCode::already_exists,
                        "the Security World in " + dir_.path().string() +
                            " is already served by another hsmsim (it holds " + lock_path + ")");
        }
        throw_errno("cannot lock " + lock_path);
    }
}

void World::create_world() {
    WorldRecord record{random_bytes(kWorldIdSize), random_secret(kWorldKeySize)};
    // `world` first: a directory holding `world` is a world, whatever else is missing.
    dir_.write_atomic("world", encode_world(record).span(), {.mode = kFileMode});
    dir_.write_atomic("modules", encode_modules({}), {.mode = kFileMode});
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    created_ = true;
    logger()->info("created a new Security World {} in {}", to_hex(id_), dir_.path().string());
}

void World::open_world() {
    auto path = path_of("world");
    if (auto st = dir_.stat_entry("world"); st && (st->st_mode & 077) != 0) {
        logger()->warn("{} is readable or writable by others (mode {:o}); it holds the world "
                       "key: run chmod 600 on it",
                       path, st->st_mode & 0777);
    }
    WorldRecord record = decode_world(dir_.read_secret("world", kMaxFile).span(), path);
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    try {
        modules_ = decode_modules(dir_.read_text("modules", kMaxFile), path_of("modules"));
    } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) {
            throw;
        }
    }
    try {
        for (const auto& c :
             decode_counters(dir_.read_text("counters", kMaxFile), path_of("counters"))) {
            counters_[c.number] = c;
        }
    } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) {
            throw;
        }
    }
    logger()->debug("opened Security World {} in {} ({} modules enrolled)", to_hex(id_),
                    dir_.path().string(), modules_.size());
}

// Counts what is there once; from then on the World's own writes keep the
// count. A damaged key or card file counts its bytes but no creator.
void World::count_files() {
    for (const auto& name : dir_.list()) {
        const auto st = dir_.stat_entry(name);
        if (!st || !S_ISREG(st->st_mode)) {
            continue;
        }
        const auto bytes = static_cast<std::uint64_t>(st->st_size);
        std::optional<uid_t> creator;
        WorldFile kind = WorldFile::other;
        try {
            if (name.starts_with(kKeyPrefix)) {
                kind = WorldFile::key;
                creator = decode_key(dir_.read_text(name, kMaxFile), path_of(name)).creator;
            } else if (name.starts_with(kCardPrefix)) {
                kind = WorldFile::token;
                creator = decode_card(dir_.read_text(name, kMaxFile), path_of(name)).creator;
            }
        } catch (const Error& e) {
            logger()->warn("a damaged file counts for no uid: {}", e.what());
        }
        usage_.record(name, kind, creator, bytes);
    }
    logger()->debug("the Security World's files take {} bytes", usage_.bytes());
}

WorldUsage World::usage() const {
    std::lock_guard lock(mutex_);
    return usage_;
}

std::vector<EnrolledModule> World::modules() const {
    std::lock_guard lock(mutex_);
    return modules_;
}

EnrolledModule World::enrol_module(const std::string& esn) {
    std::lock_guard lock(mutex_);
    auto modules = modules_;
    EnrolledModule m{static_cast<std::uint32_t>(modules.size() + 1), esn.empty() ? new_esn() : esn};
    modules.push_back(m);
    const auto text = encode_modules(modules);
    dir_.write_atomic("modules", text, {.mode = kFileMode});
    usage_.record("modules", WorldFile::other, std::nullopt, text.size());
    modules_ = std::move(modules);
    return m;
}

std::optional<ModuleCounters> World::counters(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    auto it = counters_.find(number);
    if (it == counters_.end()) {
        return std::nullopt;
    }
    return it->second;
}

void World::save_counters(const std::vector<ModuleCounters>& changed) {
    std::lock_guard lock(mutex_);
    auto counters = counters_;
    for (const auto& c : changed) {
        counters[c.number] = c;
    }
    persist_counters_locked(std::move(counters));
}

void World::save_generation(std::uint32_t number, std::uint64_t generation) {
    update_counters(number, [generation](ModuleCounters& c) { c.generation = generation; });
}

void World::reserve_handles(std::uint32_t number, std::uint64_t below) {
    update_counters(number, [below](ModuleCounters& c) { c.handles = below; });
}

void World::update_counters(std::uint32_t number,
                            const std::function<void(ModuleCounters&)>& change) {
    std::lock_guard lock(mutex_);
    auto counters = counters_;
    change(counters.try_emplace(number, ModuleCounters{number, 0, 1}).first->second);
    persist_counters_locked(std::move(counters));
}

void World::persist_counters_locked(std::map<std::uint32_t, ModuleCounters> counters) {
    std::vector<ModuleCounters> list;
    list.reserve(counters.size());
    for (const auto& [number, c] : counters) {
        list.push_back(c);
    }
    const auto text = encode_counters(list);
    dir_.write_atomic("counters", text, {.mode = kFileMode});
    usage_.record("counters", WorldFile::other, std::nullopt, text.size());
    counters_ = std::move(counters);
}

std::vector<std::string> World::names_after(std::string_view prefix, std::string_view after) const {
    std::vector<std::string> out;
    for (auto& name : dir_.list()) {
        if (name.starts_with(prefix) && std::string_view(name).substr(prefix.size()) > after) {
            out.push_back(std::move(name));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace preloadrun::sim
