#include "preloadrun/common/files.hpp"

#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun {

void sync_dir(const std::filesystem::path& dir) {
    Dir::open(dir, Dir::LastLink::follow).sync();
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> contents,
                       const AtomicWriteOptions& options) {
    auto dir = path.parent_path();
    if (dir.empty()) {
        dir = ".";
    }
    Dir parent;
    try {
        parent = Dir::open(dir, Dir::LastLink::follow);
    } catch (const Error& e) {
        throw Error(ErrorCode::io, "cannot create " + path.string() + ": " + e.what());
    }
    parent.write_atomic(path.filename().string(), contents, options);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents,
                       const AtomicWriteOptions& options) {
    write_file_atomic(path,
                      std::span<const std::uint8_t>(
                          reinterpret_cast<const std::uint8_t*>(contents.data()), contents.size()),
                      options);
}

void throw_open_error(const std::filesystem::path& path, int err) {
    if (err == ENOENT) {
        throw Error(ErrorCode::not_found, path.string() + ": no such file");
    }
    if (err == ELOOP) {
        throw Error(ErrorCode::permission, path.string() + ": is a symbolic link, refused");
    }
    throw_errno("cannot open " + path.string(), err);
}

namespace {

[[noreturn]] void throw_too_large(const std::filesystem::path& path, std::size_t max_size) {
    throw Error(ErrorCode::limit,
                path.string() + ": larger than " + std::to_string(max_size) + " bytes");
}

// The size of a regular file of at most max_size bytes.
std::size_t regular_file_size(int fd, const std::filesystem::path& path, std::size_t max_size) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        throw_errno("cannot stat " + path.string());
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error(ErrorCode::io, path.string() + ": not a regular file");
    }
    if (static_cast<std::size_t>(st.st_size) > max_size) {
        throw_too_large(path, max_size);
    }
    return static_cast<std::size_t>(st.st_size);
}

// Reads until end of file or until `size` bytes are in; how many came.
std::size_t read_into(int fd, std::uint8_t* data, std::size_t size,
                      const std::filesystem::path& path) {
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, data + got, size - got);
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
    return got;
}

Fd open_regular(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd) {
        throw_open_error(path, errno);
    }
    return fd;
}

} // namespace

Bytes read_open_file(int fd, const std::filesystem::path& path, std::size_t max_size) {
    Bytes out(regular_file_size(fd, path, max_size));
    std::size_t got = read_into(fd, out.data(), out.size(), path);
    // A file may grow while it is read: take what came, up to the bound.
    while (got == out.size() && out.size() <= max_size) {
        out.resize(std::min(max_size + 1, out.size() + 4096));
        const std::size_t more = read_into(fd, out.data() + got, out.size() - got, path);
        if (more == 0) {
            break;
        }
        got += more;
    }
    if (got > max_size) {
        throw_too_large(path, max_size);
    }
    out.resize(got);
    return out;
}

Bytes read_file(const std::filesystem::path& path, std::size_t max_size) {
    return read_open_file(open_regular(path).get(), path, max_size);
}

SecureBuffer read_open_secret(int fd, const std::filesystem::path& path, std::size_t max_size) {
    const std::size_t size = regular_file_size(fd, path, max_size);
    // One byte more than the file has, to see its end (or that it grew).
    SecureBuffer out(size + 1);
    const std::size_t got = read_into(fd, out.data(), out.size(), path);
    if (got > size) {
        if (size == max_size) {
            throw_too_large(path, max_size);
        }
        throw Error(ErrorCode::io, path.string() + ": changed while it was read; try again");
    }
    out.truncate(got);
    return out;
}

SecureBuffer read_secret_file(const std::filesystem::path& path, std::size_t max_size) {
    return read_open_secret(open_regular(path).get(), path, max_size);
}

std::string read_text_file(const std::filesystem::path& path, std::size_t max_size) {
    auto bytes = read_file(path, max_size);
    return {bytes.begin(), bytes.end()};
}

void ensure_private_dir(const std::filesystem::path& dir, std::string_view what) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        throw_errno("cannot create " + std::string(what) + " " + dir.string());
    }
    Dir::open_safe(dir, what);
}

} // namespace preloadrun
