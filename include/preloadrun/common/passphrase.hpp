#pragma once
// Passphrases come only from a terminal prompt, a file, or a descriptor:
// never from argv or the environment. They live in SecureBuffer.

#include "preloadrun/common/secure_buffer.hpp"

#include <filesystem>
#include <string>

namespace preloadrun {

inline constexpr std::size_t kMaxPassphrase = 1024;

// The file's contents with one trailing line ending ("\n", or "\r\n" as a
// file edited on Windows has) removed. A symbolic link is followed; the file
// reached must be a regular file of this user or root, not writable by group
// or others (Error(permission) otherwise); one readable by others is read
// with a warning. Refuses an empty passphrase and a file larger than
// kMaxPassphrase.
SecureBuffer read_passphrase_file(const std::filesystem::path& path);

// Reads one line from `fd` (up to a newline or end of file), without its
// line ending ("\n" or "\r\n"). Used for --passphrase-fd; reads byte by byte so that several
// passphrases can come through one descriptor, one per line.
SecureBuffer read_passphrase_fd(int fd);

// Prompts on /dev/tty with echo off. With confirm, asks twice and refuses a
// mismatch. Throws Error(usage) when there is no terminal to ask on.
SecureBuffer prompt_passphrase(const std::string& prompt, bool confirm = false);

} // namespace preloadrun
