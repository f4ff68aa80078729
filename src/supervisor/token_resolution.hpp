#pragma once
// From the -s/-c arguments to the world's tokens, and to their passphrases.

#include "options.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <vector>

namespace preloadrun::supervisor {

// The value of --passphrase-file: TOKEN=FILE when an '=' comes before any
// '/' (TOKEN is checked against the tokens once they are known, by name or
// hash), else FILE for every token. A FILE whose name holds such an '=' is
// written with a directory: ./a=b. Throws Error(usage) for "TOKEN=".
PassphraseFile parse_passphrase_file(const std::string& text);

// Each request matched by name or by hash (hex, any case) against the
// world's tokens of that type. Throws Error(not_found) naming the token and
// listing the known ones, Error(usage) for a token requested twice.
std::vector<hsm::TokenInfo> resolve_tokens(const std::vector<TokenRequest>& requests,
                                           const std::vector<hsm::TokenInfo>& world);

// One passphrase per token, in order: from --passphrase-fd (one line per
// token), from --passphrase-file TOKEN=FILE or a FILE for all, or asked on
// the terminal. Throws Error(usage) when none of these can give one.
std::vector<SecureBuffer> collect_passphrases(const Options& options,
                                              const std::vector<TokenRequest>& requests,
                                              const std::vector<hsm::TokenInfo>& tokens);

} // namespace preloadrun::supervisor
