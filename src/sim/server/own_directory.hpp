#pragma once
// hsmsim serve writes in its Security World directory and in the directories
// of its sockets, creating those that are missing. None of them may belong to
// another user: root, above all, would leave files there (the systemd unit's
// world in /var/lib/hsmsim/kmdata, say) that the service of their owner can
// then neither use nor replace.

#include <filesystem>
#include <string_view>
#include <sys/types.h>

namespace preloadrun::sim {

// Throws Error(permission), naming the owner and the fix, unless `dir`, when
// it exists, belongs to `user` and, when it is missing, the nearest directory
// above it that exists (where the missing ones would be made) belongs to
// `user` or root. `what`: "the Security World directory"; `setting`: how to
// choose another one ("NFAST_KMDATA or --kmdata"). Checked before anything is
// written; the directories are checked again once opened.
void require_own_directory(const std::filesystem::path& dir, uid_t user, std::string_view what,
                           std::string_view setting);

} // namespace preloadrun::sim
