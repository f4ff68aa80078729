#pragma once
// preloadrun's command line. Exit statuses: see preloadrun(1).

namespace preloadrun::supervisor {

int run_cli(int argc, char** argv) noexcept;

} // namespace preloadrun::supervisor
