#pragma once
// Where hsmsim keeps its Security World when NFAST_KMDATA is not set.

#include <filesystem>

namespace preloadrun::sim {

// $NFAST_KMDATA; else /var/lib/hsmsim/kmdata for root; else
// ${XDG_DATA_HOME:-~/.local/share}/hsmsim/kmdata.
std::filesystem::path default_kmdata();

} // namespace preloadrun::sim
