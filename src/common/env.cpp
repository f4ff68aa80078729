#include "preloadrun/common/env.hpp"

#include <cstdlib>

namespace preloadrun {

const char* getenv_nonempty(const char* name) noexcept {
    const char* value = ::secure_getenv(name);
    return (value != nullptr && *value != '\0') ? value : nullptr;
}

} // namespace preloadrun
