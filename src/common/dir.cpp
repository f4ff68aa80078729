#include "preloadrun/common/dir.hpp"

#include "preloadrun/common/error.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/un.h>
#include <unistd.h>

namespace preloadrun {

namespace fs = std::filesystem;

namespace {

void check_name(std::string_view name) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
        name.find('\0') != std::string_view::npos) {
        throw Error(ErrorCode::internal, "'" + std::string(name) + "' is not a directory entry");
    }
}

// Unique enough for a name created with O_EXCL (a clash fails, it does not
// overwrite). getrandom(), not std::random_device: its set-up probes the CPU
// (cpuid), which costs tens of microseconds in a virtual machine.
std::uint64_t temp_suffix() {
    std::uint64_t value = 0;
    if (::getrandom(&value, sizeof value, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof value)) {
        return value;
    }
    static std::atomic<std::uint64_t> counter{0};
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    return static_cast<std::uint64_t>(now) * 0x9e3779b97f4a7c15ULL ^
           (static_cast<std::uint64_t>(::getpid()) << 32) ^ counter.fetch_add(1);
}

std::string temp_name_for(std::string_view name) {
    static constexpr char digits[] = "0123456789abcdef";
    const auto value = temp_suffix();
    std::string out = "." + std::string(name) + ".tmp.";
    for (int i = 0; i < 16; ++i) {
        out += digits[(value >> (4 * i)) & 0xf];
    }
    return out;
}

void write_all(int fd, const std::uint8_t* data, std::size_t size, const std::string& what) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot write " + what);
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

} // namespace

void create_directories(const fs::path& dir, mode_t mode) {
    struct stat st {};
    if (dir.empty() || ::stat(dir.c_str(), &st) == 0) {
        return;
    }
    const auto parent = dir.parent_path();
    if (parent != dir) {
        create_directories(parent, mode);
    }
    Dir::open_or_create(dir, mode);
}

Dir Dir::open(const fs::path& path, LastLink last, Access access) {
    if (path.empty()) {
        throw Error(ErrorCode::usage, "an empty directory path");
    }
    int flags = (access == Access::lookup ? O_PATH : O_RDONLY) | O_DIRECTORY | O_CLOEXEC;
    if (last == LastLink::refuse) {
        flags |= O_NOFOLLOW;
    }
    Fd fd(::open(path.c_str(), flags));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found, path.string() + ": no such directory");
        }
        if (err == ELOOP) {
            throw Error(ErrorCode::permission, path.string() + ": is a symbolic link, refused");
        }
        if (err == ENOTDIR) {
            struct stat st {};
            if (last == LastLink::refuse && ::lstat(path.c_str(), &st) == 0 &&
                S_ISLNK(st.st_mode)) {
                throw Error(ErrorCode::permission, path.string() + ": is a symbolic link, refused");
            }
            throw Error(ErrorCode::permission, path.string() + ": not a directory");
        }
        if (err == EACCES || err == EPERM) {
            throw Error(ErrorCode::permission, "cannot open directory " + path.string() + ": " +
                                                   std::generic_category().message(err));
        }
        throw_errno("cannot open directory " + path.string(), err);
    }
    return Dir(std::move(fd), path);
}

Dir Dir::open_or_create(const fs::path& path, mode_t mode) {
    const bool created = ::mkdir(path.c_str(), mode) == 0;
    if (!created && errno != EEXIST) {
        const int err = errno;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found,
                        "cannot create directory " + path.string() + ": its parent does not exist");
        }
        throw_errno("cannot create directory " + path.string(), err);
    }
    Dir dir = open(path);
    if (created && ::fchmod(dir.fd(), mode) != 0) { // the umask must not narrow it
        throw_errno("cannot set the mode of " + path.string());
    }
    return dir;
}

Dir Dir::open_safe(const fs::path& path, std::string_view what) {
    Dir dir;
    try {
        dir = open(path);
    } catch (const Error& e) {
        throw Error(e.code(), std::string(what) + " " + e.what());
    }
    dir.require(::geteuid(), S_IWGRP | S_IWOTH, what);
    return dir;
}

struct stat Dir::status() const {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw_errno("cannot stat " + path_.string());
    }
    return st;
}

Dir Dir::duplicate() const {
    Fd copy(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
    if (!copy) {
        throw_errno("cannot duplicate the descriptor of " + path_.string());
    }
    return Dir(std::move(copy), path_);
}

void Dir::require(uid_t owner, mode_t forbidden, std::string_view what) const {
    const auto st = status();
    const std::string name = std::string(what) + " " + path_.string();
    if (st.st_uid != owner) {
        throw Error(ErrorCode::permission, name + " is owned by uid " + std::to_string(st.st_uid) +
                                               ", not by uid " + std::to_string(owner) +
                                               "; refused");
    }
    if ((st.st_mode & forbidden) != 0) {
        const bool writable = (st.st_mode & forbidden & 022) != 0;
        throw Error(ErrorCode::permission,
                    name + " has mode " + mode_text(st.st_mode) + ": " +
                        (writable ? "writable" : "readable") + " by " +
                        ((forbidden & 070) != 0 ? "group or others" : "others") + "; run chmod " +
                        ((forbidden & 070) != 0 ? "go" : "o") + "-" +
                        ((forbidden & 044) != 0 ? "rwx" : "w") + " on it");
    }
}

Fd Dir::open_entry(std::string_view name, int flags, mode_t mode) const {
    check_name(name);
    const std::string entry(name);
    return Fd(::openat(fd_.get(), entry.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
}

std::optional<struct stat> Dir::stat_entry(std::string_view name) const {
    check_name(name);
    const std::string entry(name);
    struct stat st {};
    if (::fstatat(fd_.get(), entry.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) {
            return std::nullopt;
        }
        throw_errno("cannot stat " + (path_ / entry).string());
    }
    return st;
}

Bytes Dir::read(std::string_view name, std::size_t max_size) const {
    const auto path = *this / name;
    Fd fd = open_entry(name, O_RDONLY | O_NONBLOCK);
    if (!fd) {
        throw_open_error(path, errno);
    }
    return read_open_file(fd.get(), path, max_size);
}

SecureBuffer Dir::read_secret(std::string_view name, std::size_t max_size) const {
    const auto path = *this / name;
    Fd fd = open_entry(name, O_RDONLY | O_NONBLOCK);
    if (!fd) {
        throw_open_error(path, errno);
    }
    return read_open_secret(fd.get(), path, max_size);
}

std::string Dir::read_text(std::string_view name, std::size_t max_size) const {
    auto bytes = read(name, max_size);
    return {bytes.begin(), bytes.end()};
}

void Dir::write_atomic(std::string_view name, std::span<const std::uint8_t> contents,
                       const AtomicWriteOptions& options) const {
    check_name(name);
    const std::string entry(name);
    const std::string temp = temp_name_for(name);
    const std::string temp_text = (path_ / temp).string();
    Fd fd = open_entry(temp, O_WRONLY | O_CREAT | O_EXCL, options.mode);
    if (!fd) {
        throw_errno("cannot create " + temp_text);
    }
    try {
        // The umask must not widen or narrow the requested mode.
        if (options.group != static_cast<gid_t>(-1) &&
            ::fchown(fd.get(), static_cast<uid_t>(-1), options.group) != 0) {
            throw_errno("cannot set the group of " + temp_text);
        }
        if (::fchmod(fd.get(), options.mode) != 0) {
            throw_errno("cannot set mode of " + temp_text);
        }
        write_all(fd.get(), contents.data(), contents.size(), temp_text);
        if (options.sync && ::fsync(fd.get()) != 0) {
            throw_errno("cannot sync " + temp_text);
        }
        fd.reset();
        if (::renameat(fd_.get(), temp.c_str(), fd_.get(), entry.c_str()) != 0) {
            throw_errno("cannot rename " + temp_text + " to " + (path_ / entry).string());
        }
    } catch (...) {
        ::unlinkat(fd_.get(), temp.c_str(), 0);
        throw;
    }
    if (options.sync) {
        sync();
    }
}

void Dir::write_atomic(std::string_view name, std::string_view contents,
                       const AtomicWriteOptions& options) const {
    write_atomic(name,
                 std::span<const std::uint8_t>(
                     reinterpret_cast<const std::uint8_t*>(contents.data()), contents.size()),
                 options);
}

bool Dir::remove(std::string_view name) const {
    check_name(name);
    const std::string entry(name);
    if (::unlinkat(fd_.get(), entry.c_str(), 0) != 0) {
        if (errno == ENOENT) {
            return false;
        }
        throw_errno("cannot remove " + (path_ / entry).string());
    }
    return true;
}

void Dir::rename(std::string_view from, std::string_view to) const {
    check_name(from);
    check_name(to);
    const std::string old_entry(from);
    const std::string new_entry(to);
    if (::renameat(fd_.get(), old_entry.c_str(), fd_.get(), new_entry.c_str()) != 0) {
        const int err = errno;
        const auto what = "cannot rename " + (path_ / old_entry).string() + " to " + new_entry;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found, what + ": no such file");
        }
        throw_errno(what, err);
    }
}

std::vector<std::string> Dir::list() const {
    // fdopendir takes the descriptor it is given: give it a fresh one.
    int copy = ::openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (copy < 0) {
        throw_errno("cannot list " + path_.string());
    }
    DIR* stream = ::fdopendir(copy);
    if (stream == nullptr) {
        const int err = errno;
        ::close(copy);
        throw_errno("cannot list " + path_.string(), err);
    }
    std::vector<std::string> names;
    errno = 0;
    while (const dirent* entry = ::readdir(stream)) {
        const std::string_view name = entry->d_name;
        if (name != "." && name != "..") {
            names.emplace_back(name);
        }
    }
    const int err = errno;
    ::closedir(stream);
    if (err != 0) {
        throw_errno("cannot list " + path_.string(), err);
    }
    return names;
}

void Dir::sync() const {
    if (::fsync(fd_.get()) != 0) {
        throw_errno("cannot sync directory " + path_.string());
    }
}

std::string Dir::fd_path(std::string_view name) const {
    check_name(name);
    std::string path = "/proc/self/fd/" + std::to_string(fd_.get()) + "/" + std::string(name);
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
        throw Error(ErrorCode::usage,
                    "the name '" + std::string(name) + "' is too long for a " + "socket address");
    }
    return path;
}

} // namespace preloadrun
