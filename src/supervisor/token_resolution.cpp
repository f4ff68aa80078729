#include "token_resolution.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/passphrase.hpp"

#include <algorithm>
#include <cctype>

namespace preloadrun::supervisor {

namespace {

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

// The file given for this token with TOKEN=FILE (by name or hash as typed),
// else the file given for all tokens, else none.
const PassphraseFile* file_for(const Options& options, const TokenRequest& request,
                               const hsm::TokenInfo& token) {
    const PassphraseFile* shared = nullptr;
    for (const auto& file : options.passphrase_files) {
        if (file.token.empty()) {
            shared = &file;
        } else if (file.token == request.name_or_hash || file.token == token.name ||
                   lower(file.token) == to_hex(token.hash)) {
            return &file;
        }
    }
    return shared;
}

} // namespace

PassphraseFile parse_passphrase_file(const std::string& text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0 || text.find('/') < eq) {
        return {"", text};
    }
    if (eq + 1 == text.size()) {
        throw Error(ErrorCode::usage, "--passphrase-file " + text + ": no FILE after '='");
    }
    return {text.substr(0, eq), text.substr(eq + 1)};
}

std::vector<hsm::TokenInfo> resolve_tokens(const std::vector<TokenRequest>& requests,
                                           const std::vector<hsm::TokenInfo>& world) {
    std::vector<hsm::TokenInfo> resolved;
    for (const auto& request : requests) {
        const hsm::TokenInfo* match = nullptr;
        std::string known;
        for (const auto& token : world) {
            if (hsm::to_string(token.type) != request.type) {
                continue;
            }
            known += (known.empty() ? "" : ", ") + token.name;
            if (token.name == request.name_or_hash ||
                to_hex(token.hash) == lower(request.name_or_hash)) {
                match = &token;
            }
        }
        if (match == nullptr) {
            throw Error(ErrorCode::not_found, "no " + request.type + " '" + request.name_or_hash +
                                                  "' in this world (" +
                                                  (known.empty() ? "it has no " + request.type + "s"
                                                                 : request.type + "s: " + known) +
                                                  ")");
        }
        for (const auto& already : resolved) {
            if (already.hash == match->hash) {
                throw Error(ErrorCode::usage, hsm::describe(*match) + " is given twice");
            }
        }
        resolved.push_back(*match);
    }
    return resolved;
}

std::vector<SecureBuffer> collect_passphrases(const Options& options,
                                              const std::vector<TokenRequest>& requests,
                                              const std::vector<hsm::TokenInfo>& tokens) {
    for (const auto& file : options.passphrase_files) {
        if (file.token.empty()) {
            continue;
        }
        bool used = false;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            used = used || file.token == requests[i].name_or_hash || file.token == tokens[i].name ||
                   lower(file.token) == to_hex(tokens[i].hash);
        }
        if (!used) {
            throw Error(ErrorCode::usage, "--passphrase-file names '" + file.token +
                                              "', which is not one of the tokens to load");
        }
    }
    std::vector<SecureBuffer> passphrases;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (const auto* file = file_for(options, requests[i], tokens[i])) {
            passphrases.push_back(read_passphrase_file(file->path));
        } else if (options.passphrase_fd) {
            passphrases.push_back(read_passphrase_fd(*options.passphrase_fd));
        } else {
            try {
                passphrases.push_back(
                    prompt_passphrase("Passphrase for " + hsm::describe(tokens[i]) + ": "));
            } catch (const NoTerminal&) {
                throw Error(ErrorCode::usage, "no passphrase for " + hsm::describe(tokens[i]) +
                                                  ": no terminal to ask on; use "
                                                  "--passphrase-file or --passphrase-fd");
            }
        }
    }
    return passphrases;
}

} // namespace preloadrun::supervisor
