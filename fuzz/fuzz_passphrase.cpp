// libFuzzer target: passphrase input (preloadrun/common/passphrase.hpp) and
// the --passphrase-file argument, through the real code: the bytes are put
// in an in-memory file that the readers open or read as they would any
// other. The results are checked against what preloadrun(1) promises: one
// line ending ("\n" or "\r\n") removed, at most kMaxPassphrase bytes, never
// empty.
//
// Input: a first byte choosing the reader, then its input:
//   'f'  the contents of a --passphrase-file (read_passphrase_file)
//   'd'  what comes through --passphrase-fd, one passphrase per line, read
//        until the first refusal (read_passphrase_fd)
//   'a'  a --passphrase-file argument, [TOKEN=]FILE (parse_passphrase_file)
// Any other first byte picks one of them too.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "token_resolution.hpp"

#include <cstdlib>
#include <optional>
#include <spdlog/sinks/null_sink.h>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using preloadrun::Error;
using preloadrun::ErrorCode;
using preloadrun::kMaxPassphrase;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

// An in-memory regular file of this user, mode 0600, as a passphrase file
// must be; opened again by path through /proc/self/fd.
struct MemoryFile {
    int fd = -1;
    std::string path;

    MemoryFile() {
        fd = ::memfd_create("fuzz_passphrase", MFD_CLOEXEC);
        check(fd >= 0 && ::fchmod(fd, 0600) == 0);
        path = "/proc/self/fd/" + std::to_string(fd);
    }

    void fill(std::string_view bytes) const {
        check(::ftruncate(fd, 0) == 0);
        check(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
        check(::lseek(fd, 0, SEEK_SET) == 0);
    }
};

const MemoryFile& memory_file() {
    static const MemoryFile file;
    return file;
}

// The result promised for one passphrase: the line without one line ending,
// or the code of the refusal.
struct Expected {
    std::string_view passphrase;
    std::optional<ErrorCode> refusal;
};

Expected expect(std::string_view passphrase) {
    if (passphrase.size() > kMaxPassphrase) {
        return {{}, ErrorCode::limit};
    }
    if (passphrase.empty()) {
        return {{}, ErrorCode::usage};
    }
    return {passphrase, std::nullopt};
}

template <class Read> void compare(Read read, const Expected& expected) {
    try {
        const auto got = read();
        check(!expected.refusal && got.view() == expected.passphrase);
    } catch (const Error& e) {
        check(expected.refusal && e.code() == *expected.refusal);
    }
}

void passphrase_file(std::string_view input) {
    const auto& file = memory_file();
    file.fill(input);
    std::string_view passphrase = input;
    if (passphrase.ends_with("\r\n")) {
        passphrase.remove_suffix(2);
    } else if (passphrase.ends_with('\n')) {
        passphrase.remove_suffix(1);
    }
    compare([&] { return preloadrun::read_passphrase_file(file.path); }, expect(passphrase));
}

void passphrase_fd(std::string_view input) {
    const auto& file = memory_file();
    file.fill(input);
    std::size_t at = 0;
    for (;;) {
        const auto newline = input.find('\n', at);
        std::string_view line = input.substr(
            at, newline == std::string_view::npos ? std::string_view::npos : newline - at);
        if (newline != std::string_view::npos && line.ends_with('\r')) {
            line.remove_suffix(1);
        }
        const Expected expected = expect(line);
        compare([&] { return preloadrun::read_passphrase_fd(file.fd); }, expected);
        if (expected.refusal || newline == std::string_view::npos) {
            return; // preloadrun stops at the first refusal; at the end, nothing more to read
        }
        at = newline + 1;
    }
}

void passphrase_file_argument(std::string_view input) {
    const std::string text(input);
    try {
        const auto file = preloadrun::supervisor::parse_passphrase_file(text);
        if (file.token.empty()) {
            check(file.path == text);
        } else {
            // TOKEN=FILE: nothing lost, TOKEN without '=' or '/', FILE not empty.
            check(file.token + "=" + file.path == text);
            check(file.token.find_first_of("=/") == std::string::npos && !file.path.empty());
        }
    } catch (const Error& e) {
        check(e.code() == ErrorCode::usage && text.size() >= 2 && text.back() == '=' &&
              text.find('=') == text.size() - 1 && text.find('/') == std::string::npos);
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    preloadrun::log::use_sink(std::make_shared<spdlog::sinks::null_sink_mt>(), spdlog::level::off);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (data[0]) {
    case 'f':
        passphrase_file(input);
        break;
    case 'd':
        passphrase_fd(input);
        break;
    case 'a':
        passphrase_file_argument(input);
        break;
    default:
        (data[0] % 3 == 0   ? passphrase_file
         : data[0] % 3 == 1 ? passphrase_fd
                            : passphrase_file_argument)(input);
        break;
    }
    return 0;
}
