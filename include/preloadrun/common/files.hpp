#pragma once
// File helpers shared by the three programs: atomic publication, bounded reads,
// private directories.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace preloadrun {

struct AtomicWriteOptions {
    mode_t mode = 0600;
    gid_t group = static_cast<gid_t>(-1); // chown the file to this group; -1: leave it
    bool sync = true;                     // fsync the file before rename and the directory after
};

// Publishes `contents` at `path` atomically: a temporary file in the same
// directory, write, fsync, rename over `path`, fsync the directory. Readers
// see either the old or the new file, never a partial one. Throws Error(io).
void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> contents,
                       const AtomicWriteOptions& options = {});
void write_file_atomic(const std::filesystem::path& path, std::string_view contents,
                       const AtomicWriteOptions& options = {});

// Reads a whole regular file of at most max_size bytes; refuses symlinks and
// anything that is not a regular file. Throws Error(not_found) if it does not
// exist, Error(io) otherwise, Error(limit) when larger than max_size.
Bytes read_file(const std::filesystem::path& path, std::size_t max_size = 16 * 1024 * 1024);
std::string read_text_file(const std::filesystem::path& path,
                           std::size_t max_size = 16 * 1024 * 1024);
// read_file() of a descriptor already open (`path` names it in messages).
Bytes read_open_file(int fd, const std::filesystem::path& path, std::size_t max_size);

// read_file() for a file that holds a secret (a passphrase, a key): read
// straight into one SecureBuffer sized from the file, never reallocated, so
// no copy of the contents is left anywhere else. Same checks and errors as
// read_file(), plus Error(io) when the file grows while it is read.
SecureBuffer read_secret_file(const std::filesystem::path& path, std::size_t max_size);
SecureBuffer read_open_secret(int fd, const std::filesystem::path& path, std::size_t max_size);
// The Error for a failed open() of `path` with errno `err`: not_found,
// permission (a symlink refused by O_NOFOLLOW) or io.
[[noreturn]] void throw_open_error(const std::filesystem::path& path, int err);

// Creates `dir` (mode 0700) if missing; then checks it as Dir::open_safe()
// does (a real directory, owned by the caller, not writable by group or
// others), naming it `what` in messages. Throws Error(permission) naming the
// problem otherwise.
void ensure_private_dir(const std::filesystem::path& dir, std::string_view what = "directory");

// fsync() of a directory, so that a rename or unlink in it is durable.
void sync_dir(const std::filesystem::path& dir);

} // namespace preloadrun
