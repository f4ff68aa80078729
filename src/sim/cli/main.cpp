#include "cli/cli.hpp"

int main(int argc, char** argv) {
    return preloadrun::sim::run_cli(argc, argv);
}
