#include "preloadrun/common/env.hpp"

#include <cstdlib>
#include <initializer_list>

namespace preloadrun {

const char* getenv_nonempty(const char* name) noexcept {
    const char* value = ::secure_getenv(name);
    return (value != nullptr && *value != '\0') ? value : nullptr;
}

const char* getenv_nonempty(const AliasedVariable& variable) noexcept {
    return getenv_found(variable).value;
}

FoundVariable getenv_found(const AliasedVariable& variable) noexcept {
    for (const char* name : {variable.name, variable.alias}) {
        if (const char* value = getenv_nonempty(name)) {
            return {value, name};
        }
    }
    return {};
}

} // namespace preloadrun
