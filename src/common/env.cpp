#include "preloadrun/common/env.hpp"

#include <cstdlib>

namespace preloadrun {

const char* getenv_nonempty(const char* name) noexcept {
    const char* value = ::secure_getenv(name);
    return (value != nullptr && *value != '\0') ? value : nullptr;
}

const char* getenv_nonempty(const AliasedVariable& variable) noexcept {
    const char* value = getenv_nonempty(variable.name);
    return value != nullptr ? value : getenv_nonempty(variable.alias);
}

} // namespace preloadrun
