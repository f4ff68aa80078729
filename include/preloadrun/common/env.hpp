#pragma once
// Reading the environment: a variable set to the empty string counts as unset.

namespace preloadrun {

// The value of `name`, or nullptr when it is unset or empty.
const char* getenv_nonempty(const char* name) noexcept;

} // namespace preloadrun
