#pragma once
// `preloadrun check [FILE]` and `preloadrun status [FILE] [--json]`.

#include <string>

namespace preloadrun::supervisor {

inline constexpr int kCheckLive = 0;
inline constexpr int kCheckNotLive = 1;
inline constexpr int kCheckUsage = 2;
// This user may not read the file or its lock (or reading failed): whether
// the owner lives is not known.
inline constexpr int kCheckUnknown = 3;

// FILE, else $NFAST_NFKM_TOKENSFILE; throws Error(usage) when neither is set.
std::string tokens_file_argument(const std::string& given);

// Prints one line (stdout when live, stderr otherwise) and returns 0, 1 or 3.
int check_command(const std::string& path);
// Prints the owner, tokens, modules, generation and reloads; returns 0 when
// the file is live, 3 when that cannot be checked, 1 otherwise (after
// printing what could be read).
int status_command(const std::string& path, bool json);

} // namespace preloadrun::supervisor
