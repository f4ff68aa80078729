#include "cli/cli.hpp"
#include "member/worker.hpp"

#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    // A PKCS#11 member's worker, started by the service itself.
    if (argc == 3 && std::strcmp(argv[1], preloadrun::sim::member::kWorkerCommand) == 0) {
        return preloadrun::sim::member::run_worker(std::atoi(argv[2]));
    }
    return preloadrun::sim::run_cli(argc, argv);
}
