#pragma once
// What the command line asked preloadrun to do.

#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace preloadrun::supervisor {

// A token named on the command line with -s or -c: a name or a hash.
struct TokenRequest {
    std::string type; // softcard | cardset
    std::string name_or_hash;
};

// Where one passphrase comes from: --passphrase-file [TOKEN=]FILE.
struct PassphraseFile {
    std::string token; // empty: every token without a file of its own
    std::string path;
};

struct Options {
    std::vector<TokenRequest> tokens;
    std::vector<PassphraseFile> passphrase_files;
    std::optional<int> passphrase_fd;
    std::string tokens_file;       // -f; empty: one file per instance
    std::string attach;            // --attach FILE
    std::string group;             // --group: tokens file 0640 for this group
    bool high_availability = true; // --no-ha clears it
    std::chrono::milliseconds retry_window{5 * 60 * 1000};
    bool subreaper = false;
    bool process_group = false;       // forward signals to the child's process group
    std::string socket;               // HSM service socket; empty: default
    std::vector<std::string> command; // COMMAND [ARG...]; empty: service mode
};

} // namespace preloadrun::supervisor
