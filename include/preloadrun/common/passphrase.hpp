#pragma once
// Passphrases come only from a terminal prompt, a file, or a descriptor:
// never from argv or the environment. They live in SecureBuffer.

#include "preloadrun/common/error.hpp"
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

// Thrown by prompt_passphrase when there is no terminal to ask on.
class NoTerminal : public Error {
public:
    explicit NoTerminal(const std::string& message) : Error(ErrorCode::usage, message) {}
};

// Prompts on /dev/tty with echo off and reads one line (Enter: a newline or
// a carriage return), refusing an empty one. With confirm, asks twice and
// refuses a mismatch. Job control safe: the terminal's settings are read
// and changed only in the foreground (a background process stops with
// SIGTTOU until fg), Ctrl-Z restores them and stops, and after a SIGCONT
// echo is off again before anything typed is read (the question is asked
// again when the process was stopped or the settings changed meanwhile).
// SIGINT, SIGTERM, SIGHUP, SIGQUIT (and the other signals that end a
// process by default) restore the terminal, then the process dies of the
// same signal as the caller's disposition has it. Throws NoTerminal when
// there is no terminal to ask on.
SecureBuffer prompt_passphrase(const std::string& prompt, bool confirm = false);

} // namespace preloadrun
