#pragma once
// A directory held open by descriptor. It is checked once, when opened, and
// every operation in it then goes through the descriptor (openat, renameat,
// unlinkat, fstatat), so that a path changed after the check (a symlink
// swapped in, a parent renamed by another user) changes nothing.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/files.hpp"

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/types.h>
#include <vector>

namespace preloadrun {

// mkdir -p: creates `dir` and the directories above it that are missing,
// each with exactly `mode`; existing ones are left as they are.
void create_directories(const std::filesystem::path& dir, mode_t mode);

class Dir {
public:
    Dir() = default;

    enum class LastLink { refuse, follow };
    // What the descriptor may do: `full` needs read permission on the
    // directory; `lookup` (O_PATH) needs only search permission and serves
    // status(), stat_entry(), fd_path() and opening entries, not list() or
    // sync().
    enum class Access { full, lookup };

    // Opens `path` as a directory. A symlink as its last component is
    // refused unless `last` says follow; earlier components are resolved
    // once, here. Throws Error(not_found), Error(permission) (a symlink, not
    // a directory, no access) or Error(io).
    static Dir open(const std::filesystem::path& path, LastLink last = LastLink::refuse,
                    Access access = Access::full);
    // The same, creating the directory with exactly `mode` (whatever the
    // umask) if it does not exist. An existing directory keeps its mode.
    static Dir open_or_create(const std::filesystem::path& path, mode_t mode);
    // open() of a directory that must be safe to write in, the one check
    // for it: Error(permission) when it is a symlink or not a directory, or
    // fails require() of the caller's effective uid with group and others
    // not allowed to write (022); Error(not_found) when it does not exist;
    // Error(io) otherwise. Every message starts with `what` ("tokens file
    // directory") and the path.
    static Dir open_safe(const std::filesystem::path& path, std::string_view what);

    explicit operator bool() const noexcept { return static_cast<bool>(fd_); }
    int fd() const noexcept { return fd_.get(); }
    const std::filesystem::path& path() const noexcept { return path_; }
    // path()/name, for messages.
    std::filesystem::path operator/(std::string_view name) const { return path_ / name; }
    struct stat status() const;
    // Another descriptor of the same directory (for an object that must
    // outlive this one).
    Dir duplicate() const;

    // Throws Error(permission) naming `what` and the fix unless the directory
    // is owned by `owner` and has none of the permission bits in `forbidden`
    // (022: writable by group or others; 077: any access by them).
    void require(uid_t owner, mode_t forbidden, std::string_view what) const;

    // ---- entries: `name` is one path component (no '/', not "." or "..") ----
    // openat() with O_NOFOLLOW | O_CLOEXEC added. Returns an empty Fd with
    // errno set on failure.
    Fd open_entry(std::string_view name, int flags, mode_t mode = 0) const;
    // fstatat() without following a symlink; nullopt when there is no entry.
    std::optional<struct stat> stat_entry(std::string_view name) const;
    // read_file() of an entry (a symlink or non-regular file is refused).
    Bytes read(std::string_view name, std::size_t max_size) const;
    std::string read_text(std::string_view name, std::size_t max_size) const;
    // read_secret_file() of an entry: a secret read into one SecureBuffer.
    SecureBuffer read_secret(std::string_view name, std::size_t max_size) const;
    // write_file_atomic() of an entry: temporary entry, write, fsync,
    // renameat, fsync of this directory.
    void write_atomic(std::string_view name, std::span<const std::uint8_t> contents,
                      const AtomicWriteOptions& options = {}) const;
    void write_atomic(std::string_view name, std::string_view contents,
                      const AtomicWriteOptions& options = {}) const;
    // unlinkat(); false when there was no such entry.
    bool remove(std::string_view name) const;
    // renameat() within this directory, replacing `to` if it exists. Throws
    // Error(not_found) when there is no `from`, Error(io) otherwise.
    void rename(std::string_view from, std::string_view to) const;
    // The names of the entries (not "." and ".."), unsorted.
    std::vector<std::string> list() const;
    void sync() const;
    // A path that reaches `name` through this descriptor
    // (/proc/self/fd/N/name), for the calls that take only a path (bind,
    // connect). Throws Error(usage) when it would not fit a socket address.
    std::string fd_path(std::string_view name) const;

private:
    Dir(Fd fd, std::filesystem::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
    Fd fd_;
    std::filesystem::path path_;
};

} // namespace preloadrun
