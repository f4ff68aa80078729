// World: the softcards and card sets of a Security World (world_files.hpp).

#include "model/world.hpp"
#include "model/world_files.hpp"
#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <tuple>

namespace preloadrun::sim {

using namespace world_files;

hsm::TokenInfo World::create_token(hsm::TokenType type, const std::string& name,
                                   const SecureBuffer& passphrase, std::optional<uid_t> creator) {
    if (!valid_token_name(name)) {
        throw Error(ErrorCode::usage,
                    "invalid token name '" + name + "' (1..64 characters of A-Z a-z 0-9 . _ -)");
    }
    std::lock_guard lock(mutex_);
    for (const auto& token : tokens()) {
        if (token.type == type && token.name == name) {
            throw Error(ErrorCode::already_exists, std::string(token_type_text(type)) + " '" +
                                                       name + "' already exists (hash " +
                                                       to_hex(token.hash) + ")");
        }
    }
    usage_.check_room(WorldFile::token, creator, 0); // before the KDF's work
    SecureBuffer token_key = random_secret(kWrapKeySize);
    CardRecord card;
    card.type = type;
    card.name = name;
    card.hash = sha256(token_key.span());
    card.hash.resize(hsm::kTokenHashSize);
    card.iterations = kdf_iterations_;
    card.salt = random_bytes(kKdfSaltSize);
    card.creator = creator;
    SecureBuffer kek = derive_key(passphrase, card.salt, card.iterations);
    card.wrapped_key = wrap(kek, token_key.span(), token_aad(card.hash));
    const auto file = card_name(card.hash);
    if (dir_.stat_entry(file)) {
        throw Error(ErrorCode::already_exists, path_of(file) + " already exists");
    }
    const auto text = encode_card(card);
    usage_.check_room(WorldFile::token, creator, text.size());
    dir_.write_atomic(file, text, {.mode = kFileMode});
    usage_.record(file, WorldFile::token, creator, text.size());
    logger()->info("created {} '{}' (hash {}){}", token_type_text(type), name, to_hex(card.hash),
                   creator ? " for uid " + std::to_string(*creator) : std::string());
    return info_of(card);
}

void World::set_passphrase(std::span<const std::uint8_t> hash, const SecureBuffer& token_key,
                           const SecureBuffer& passphrase) {
    std::lock_guard lock(mutex_);
    CardRecord record = card(hash);
    Bytes check = sha256(token_key.span());
    check.resize(hsm::kTokenHashSize);
    if (check != record.hash) {
        throw Error(ErrorCode::internal, "the token key does not match the token");
    }
    record.iterations = kdf_iterations_;
    record.salt = random_bytes(kKdfSaltSize);
    SecureBuffer kek = derive_key(passphrase, record.salt, record.iterations);
    record.wrapped_key = wrap(kek, token_key.span(), token_aad(record.hash));
    const auto file = card_name(record.hash);
    const auto text = encode_card(record);
    dir_.write_atomic(file, text, {.mode = kFileMode});
    usage_.record(file, WorldFile::token, record.creator, text.size());
}

hsm::TokenInfo World::info_of(const CardRecord& card) {
    return hsm::TokenInfo{card.type, card.name, card.hash};
}

std::optional<hsm::TokenInfo> World::read_token(const std::string& name) const {
    try {
        auto card = decode_card(dir_.read_text(name, kMaxFile), path_of(name));
        if (name != card_name(card.hash)) {
            throw Error(ErrorCode::corrupt, path_of(name) + ": hash does not match the name");
        }
        return info_of(card);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            return std::nullopt; // removed since the directory was read
        }
        logger()->warn("skipping a damaged token file: {}", e.what());
        return std::nullopt;
    }
}

void World::visit_tokens(std::string_view after,
                         const std::function<bool(const hsm::TokenInfo&)>& visit) const {
    for (const auto& name : names_after(kCardPrefix, after)) {
        if (auto token = read_token(name); token && !visit(*token)) {
            return;
        }
    }
}

std::vector<hsm::TokenInfo> World::tokens() const {
    std::vector<hsm::TokenInfo> out;
    visit_tokens("", [&](const hsm::TokenInfo& token) {
        out.push_back(token);
        return true;
    });
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.type, a.name) < std::tie(b.type, b.name);
    });
    return out;
}

CardRecord World::card(std::span<const std::uint8_t> hash) const {
    const auto name = card_name(hash);
    return card_files_.get(dir_, name, [&] {
        const auto text = read_file(name, "no softcard or card set with hash " + to_hex(hash));
        auto card = decode_card(text, path_of(name));
        if (!std::equal(card.hash.begin(), card.hash.end(), hash.begin(), hash.end())) {
            throw Error(ErrorCode::corrupt, path_of(name) + ": hash does not match the name");
        }
        return card;
    });
}

SecureBuffer World::unlock_token(const CardRecord& card, const SecureBuffer& passphrase) const {
    SecureBuffer kek = derive_key(passphrase, card.salt, card.iterations);
    SecureBuffer token_key;
    try {
        token_key = unwrap(kek, card.wrapped_key, token_aad(card.hash));
    } catch (const Error&) {
        throw Error(ErrorCode::wrong_passphrase, "wrong passphrase for " +
                                                     std::string(token_type_text(card.type)) +
                                                     " '" + card.name + "'");
    }
    Bytes check = sha256(token_key.span());
    if (token_key.size() != kWrapKeySize ||
        !std::equal(card.hash.begin(), card.hash.end(), check.begin())) {
        throw Error(ErrorCode::corrupt, path_of(card_name(card.hash)) +
                                            ": the token key does not match the token hash");
    }
    return token_key;
}

World::DestroyedToken World::destroy_token(std::span<const std::uint8_t> hash, bool with_keys) {
    std::lock_guard lock(mutex_);
    const auto card_record = card(hash); // not_found / corrupt: say so before deleting
    const Protection protection{card_record.type, card_record.hash};
    DestroyedToken out{info_of(card_record), {}};
    for (auto& record : key_records()) {
        if (record.protection == protection) {
            out.keys.push_back(std::move(record));
        }
    }
    std::sort(out.keys.begin(), out.keys.end(), [](const auto& a, const auto& b) {
        return std::tie(a.label, a.ident) < std::tie(b.label, b.ident);
    });
    const std::string what =
        std::string(token_type_text(card_record.type)) + " '" + card_record.name + "'";
    if (!out.keys.empty() && !with_keys) {
        std::string labels;
        for (const auto& key : out.keys) {
            labels += (labels.empty() ? "'" : ", '") + key.label + "'";
        }
        throw Error(ErrorCode::conflict, what + " protects " + std::to_string(out.keys.size()) +
                                             " key(s) (" + labels +
                                             "): destroy them first, or destroy them with it");
    }
    // Every file is renamed aside first (a name that a world skips); if one
    // cannot be, those already renamed come back and nothing is lost. The
    // keys go before the card: no key outlives its token.
    std::vector<std::string> names;
    for (const auto& key : out.keys) {
        names.push_back(key_name(key.ident));
    }
    names.push_back(card_name(card_record.hash));
    std::vector<std::pair<std::string, std::string>> aside;
    try {
        for (const auto& name : names) {
            auto hidden = "." + name + ".tmp.destroyed";
            dir_.rename(name, hidden);
            aside.emplace_back(name, std::move(hidden));
        }
    } catch (const Error&) {
        for (auto it = aside.rbegin(); it != aside.rend(); ++it) {
            try {
                dir_.rename(it->second, it->first);
            } catch (const Error& e) {
                logger()->error("destroying {}: {} stays aside: {}", what, it->first, e.what());
            }
        }
        throw;
    }
    for (const auto& [name, hidden] : aside) {
        usage_.forget(name);
        try {
            dir_.remove(hidden);
        } catch (const Error& e) {
            logger()->warn("destroyed {}, but {}", what, e.what());
        }
    }
    try {
        dir_.sync();
    } catch (const Error& e) {
        logger()->warn("destroyed {}, but {}", what, e.what());
    }
    logger()->info("destroyed {} (hash {}) and {} key(s) it protected", what,
                   to_hex(card_record.hash), out.keys.size());
    return out;
}

} // namespace preloadrun::sim
