#pragma once
// preloadrun's lifecycle: load the tokens, publish the tokens file, run the
// child (or wait, in service mode), clean up. Each step is one function.

#include "options.hpp"

namespace preloadrun::supervisor {

// Returns the exit status (the child's, 128+N, 126, 127); throws
// preloadrun::Error for preloadrun's own failures (the CLI maps them to 125).
int run(const Options& options);

} // namespace preloadrun::supervisor
