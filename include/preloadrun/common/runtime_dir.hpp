#pragma once
// Where a program keeps its per-user runtime files (sockets, tokens files)
// when no path is given: a directory no other local user can create first.

#include <filesystem>
#include <string_view>

namespace preloadrun {

// $XDG_RUNTIME_DIR/<name> when XDG_RUNTIME_DIR is set; otherwise
// $HOME/.<name> (the home directory from the user database when HOME is
// unset), never a name others could take under /tmp. Nothing is created or
// checked here. Throws Error(usage) when neither gives an absolute directory.
std::filesystem::path user_runtime_dir(std::string_view name);

} // namespace preloadrun
