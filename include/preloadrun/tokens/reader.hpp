#pragma once
// What a reader (the PKCS#11 module) may use of a live tokens file, at start
// and on every change alike. The handles of a file are object handles on the
// HSM service: each means something only in the instance of the service that
// issued it, on its module while that module keeps the generation it had
// (a clear or a restore drops every object), and only for the user who
// loaded it.

#include "preloadrun/tokens/liveness.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace preloadrun::tokens {

// Which version of a file a reader applied: its owner (a preloadrun run) and
// the generation it wrote. A preloadrun started again at the same path
// numbers its generations from 1 again: the owner tells them apart.
struct FileVersion {
    std::string owner;
    std::uint64_t generation = 0;
    bool operator==(const FileVersion&) const = default;
};
FileVersion version_of(const TokensFile& file);

// The modules a reader tracks and the generation of each now.
using Generations = std::map<std::uint32_t, std::uint64_t>;

// For these modules and generations, in this service instance (hex), the
// handles of `file` that are current: every token of the file, in its order,
// with only the `loaded` entries on a module of `generations` at the
// generation given there. A handle of another instance (the service
// restarted, or the file is another service's), of a module the reader does
// not track, or of a generation before the module's last clear or restore
// means nothing, and is left out: with another instance, every one is.
std::vector<Token> current_handles(const TokensFile& file, std::string_view service_instance,
                                   const Generations& generations);

// Why a live file cannot serve a reader running as `reader`: another user
// published it, and the tokens it lists were loaded for that user (an object
// on an HSM belongs to the user that loaded it; the service refuses it to
// anyone else). nullopt when the reader's user published it, or when that
// cannot be told.
std::optional<std::string> published_by_another_user(const Liveness& liveness, uid_t reader);

} // namespace preloadrun::tokens
