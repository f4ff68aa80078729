#include "cli.hpp"

int main(int argc, char** argv) {
    return preloadrun::supervisor::run_cli(argc, argv);
}
