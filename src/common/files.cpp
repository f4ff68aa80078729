#include "preloadrun/common/files.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"

#include <cerrno>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun {

namespace {

std::string temp_name_for(const std::filesystem::path& path) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    char suffix[17];
    static constexpr char digits[] = "0123456789abcdef";
    auto value = rng();
    for (int i = 0; i < 16; ++i) {
        suffix[i] = digits[(value >> (4 * i)) & 0xf];
    }
    suffix[16] = '\0';
    return "." + path.filename().string() + ".tmp." + suffix;
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

} // namespace

void sync_dir(const std::filesystem::path& dir) {
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        throw_errno("cannot open directory " + dir.string());
    }
    if (::fsync(fd.get()) != 0) {
        throw_errno("cannot sync directory " + dir.string());
    }
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> contents,
                       const AtomicWriteOptions& options) {
    auto dir = path.parent_path();
    if (dir.empty()) {
        dir = ".";
    }
    auto temp = dir / temp_name_for(path);
    Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, options.mode));
    if (!fd) {
        throw_errno("cannot create " + temp.string());
    }
    try {
        // The umask must not widen or narrow the requested mode.
        if (options.group != static_cast<gid_t>(-1) &&
            ::fchown(fd.get(), static_cast<uid_t>(-1), options.group) != 0) {
            throw_errno("cannot set the group of " + temp.string());
        }
        if (::fchmod(fd.get(), options.mode) != 0) {
            throw_errno("cannot set mode of " + temp.string());
        }
        write_all(fd.get(), contents.data(), contents.size(), temp.string());
        if (options.sync && ::fsync(fd.get()) != 0) {
            throw_errno("cannot sync " + temp.string());
        }
        fd.reset();
        if (::rename(temp.c_str(), path.c_str()) != 0) {
            throw_errno("cannot rename " + temp.string() + " to " + path.string());
        }
    } catch (...) {
        ::unlink(temp.c_str());
        throw;
    }
    if (options.sync) {
        sync_dir(dir);
    }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents,
                       const AtomicWriteOptions& options) {
    write_file_atomic(path,
                      std::span<const std::uint8_t>(
                          reinterpret_cast<const std::uint8_t*>(contents.data()), contents.size()),
                      options);
}

Bytes read_file(const std::filesystem::path& path, std::size_t max_size) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd) {
        int err = errno;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found, path.string() + ": no such file");
        }
        if (err == ELOOP) {
            throw Error(ErrorCode::permission, path.string() + ": is a symbolic link, refused");
        }
        throw_errno("cannot open " + path.string(), err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno("cannot stat " + path.string());
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error(ErrorCode::io, path.string() + ": not a regular file");
    }
    if (static_cast<std::size_t>(st.st_size) > max_size) {
        throw Error(ErrorCode::limit,
                    path.string() + ": larger than " + std::to_string(max_size) + " bytes");
    }
    Bytes out;
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (true) {
        if (got == out.size()) {
            if (out.size() >= max_size + 1) {
                break;
            }
            out.resize(std::min(max_size + 1, out.size() + 4096));
        }
        ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot read " + path.string());
        }
        if (n == 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    if (got > max_size) {
        throw Error(ErrorCode::limit,
                    path.string() + ": larger than " + std::to_string(max_size) + " bytes");
    }
    out.resize(got);
    return out;
}

std::string read_text_file(const std::filesystem::path& path, std::size_t max_size) {
    auto bytes = read_file(path, max_size);
    return {bytes.begin(), bytes.end()};
}

void ensure_private_dir(const std::filesystem::path& dir) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        throw_errno("cannot create directory " + dir.string());
    }
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
        throw_errno("cannot stat " + dir.string());
    }
    if (S_ISLNK(st.st_mode)) {
        throw Error(ErrorCode::permission, dir.string() + ": is a symbolic link, refused");
    }
    if (!S_ISDIR(st.st_mode)) {
        throw Error(ErrorCode::permission, dir.string() + ": not a directory");
    }
    if (st.st_uid != ::geteuid()) {
        throw Error(ErrorCode::permission,
                    dir.string() + ": owned by uid " + std::to_string(st.st_uid) +
                        ", not by the caller (uid " + std::to_string(::geteuid()) + ")");
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        throw Error(ErrorCode::permission,
                    dir.string() + ": writable by group or others; run chmod go-w on it");
    }
}

} // namespace preloadrun
