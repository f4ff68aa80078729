#include "preloadrun/tokens/reader.hpp"

#include "preloadrun/tokens/environment.hpp"

namespace preloadrun::tokens {

FileVersion version_of(const TokensFile& file) {
    return {file.owner.instance, file.generation};
}

std::vector<Token> current_handles(const TokensFile& file, std::string_view service_instance,
                                   const Generations& generations) {
    const bool same_instance = file.service_instance == service_instance;
    std::vector<Token> out;
    out.reserve(file.tokens.size());
    for (const auto& token : file.tokens) {
        Token current = token;
        current.loaded.clear();
        for (const auto& loaded : token.loaded) {
            const auto module = generations.find(loaded.module);
            if (same_instance && module != generations.end() &&
                module->second == loaded.module_generation) {
                current.loaded.push_back(loaded);
            }
        }
        out.push_back(std::move(current));
    }
    return out;
}

std::optional<std::string> published_by_another_user(const Liveness& liveness, uid_t reader) {
    if (!liveness.file_uid || *liveness.file_uid == reader) {
        return std::nullopt;
    }
    const auto owner = std::to_string(*liveness.file_uid);
    return "it was published by uid " + owner + " and this process runs as uid " +
           std::to_string(reader) + ": the tokens it lists are loaded for uid " + owner +
           ", and the HSM service lets no other user use them; run the application as uid " +
           owner + ", or without " + env::kTokensFile + " (C_Login with the token's passphrase)";
}

} // namespace preloadrun::tokens
