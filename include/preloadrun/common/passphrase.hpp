#pragma once
// Passphrases come only from a terminal prompt, a file, or a descriptor:
// never from argv or the environment. They live in SecureBuffer.

#include "preloadrun/common/secure_buffer.hpp"

#include <filesystem>
#include <string>

namespace preloadrun {

inline constexpr std::size_t kMaxPassphrase = 1024;

// The file's contents with one trailing newline ("\n" or "\r\n") removed.
// Refuses an empty passphrase and a file larger than kMaxPassphrase.
SecureBuffer read_passphrase_file(const std::filesystem::path& path);

// Reads one line from `fd` (up to a newline or end of file), without the
// newline. Used for --passphrase-fd; reads byte by byte so that several
// passphrases can come through one descriptor, one per line.
SecureBuffer read_passphrase_fd(int fd);

// Prompts on /dev/tty with echo off. With confirm, asks twice and refuses a
// mismatch. Throws Error(usage) when there is no terminal to ask on.
SecureBuffer prompt_passphrase(const std::string& prompt, bool confirm = false);

} // namespace preloadrun
