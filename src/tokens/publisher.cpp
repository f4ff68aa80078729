#include "preloadrun/tokens/publisher.hpp"

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/runtime_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <linux/magic.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace preloadrun::tokens {

namespace {

void check_file(const Dir& dir, const std::string& name) {
    const auto path = (dir / name).string();
    const auto st = dir.stat_entry(name);
    if (!st) {
        return;
    }
    if (S_ISLNK(st->st_mode)) {
        throw Error(ErrorCode::permission, path + ": is a symbolic link, refused");
    }
    if (!S_ISREG(st->st_mode)) {
        throw Error(ErrorCode::permission, path + ": not a regular file");
    }
    if (st->st_uid != ::geteuid()) {
        throw Error(ErrorCode::permission,
                    path + ": owned by uid " + std::to_string(st->st_uid) + ", not by this user");
    }
}

} // namespace

Dir open_safe_directory(const std::filesystem::path& dir) {
    try {
        return Dir::open_safe(dir, "tokens file directory");
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found,
                        "tokens file directory " + dir.string() +
                            " does not exist; create it (mkdir -m 700) or give -f another path");
        }
        throw;
    }
}

std::filesystem::path default_directory() {
    auto dir = user_runtime_dir("preloadrun");
    ensure_private_dir(dir, "tokens file directory");
    return dir;
}

std::filesystem::path default_path(const std::string& instance) {
    return default_directory() / ("tokens-" + instance + ".json");
}

namespace {

// A file system kept in memory: nothing of it outlives the machine's
// running, and fsync(2) there only costs system calls.
bool in_memory(const Dir& dir) {
    struct statfs fs {};
    if (::fstatfs(dir.fd(), &fs) != 0) {
        return false;
    }
    return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

} // namespace

std::string new_instance_id() {
    // From the kernel: starting OpenSSL's generator for 16 bytes costs a
    // supervisor that loads no token more than the rest of its start-up.
    Bytes random(16);
    std::size_t got = 0;
    while (got < random.size()) {
        const ssize_t n = ::getrandom(random.data() + got, random.size() - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot get random bytes for the instance id");
        }
        got += static_cast<std::size_t>(n);
    }
    return to_hex(random);
}

Publisher::Publisher(std::filesystem::path path, PublisherOptions options)
    : path_(std::filesystem::absolute(path)), name_(path_.filename().string()), options_(options) {
    dir_ = open_safe_directory(path_.parent_path());
    syncs_ = !in_memory(dir_);
    check_file(dir_, name_);
    try {
        lock_ = OwnerLock::acquire(dir_, lock_name_for(name_), options_.group);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::already_exists) {
            throw;
        }
        auto state = check(dir_, name_);
        std::string who =
            state.file ? "live preloadrun pid " + std::to_string(state.file->owner.process.pid)
                       : "another live process";
        throw Error(ErrorCode::already_exists,
                    "tokens file " + path_.string() + " is held by " + who);
    }
    // We hold the lock now, so whoever wrote a file here before is gone,
    // whatever the file's other fields say.
    auto previous = check(dir_, name_);
    if (previous.status == Status::live && previous.file) {
        previous.status = Status::owner_dead;
        previous.reason = "preloadrun pid " + std::to_string(previous.file->owner.process.pid) +
                          " is gone (it no longer holds its lock)";
    }
    if (previous.status != Status::missing) {
        taken_over_ = std::move(previous);
        if (taken_over_->file) {
            generation_ = taken_over_->file->generation;
        }
    }
}

Publisher::~Publisher() {
    remove();
}

void Publisher::publish(TokensFile& file) {
    if (!lock_.held()) {
        throw Error(ErrorCode::internal, "tokens file " + path_.string() + " was already removed");
    }
    file.generation = generation_ + 1;
    AtomicWriteOptions write;
    write.mode = options_.group == static_cast<gid_t>(-1) ? 0600 : 0640;
    write.group = options_.group;
    write.sync = syncs_;
    dir_.write_atomic(name_, encode(file), write);
    generation_ = file.generation;
}

void Publisher::remove() noexcept {
    if (lock_.held()) {
        try {
            dir_.remove(name_);
        } catch (const Error&) {
            // The lock goes all the same: a file without its lock is stale.
        }
        lock_.release_and_remove();
    }
}

} // namespace preloadrun::tokens
