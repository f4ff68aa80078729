#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/log.hpp"
#include "support/temp_dir.hpp"

#include <cstdlib>
#include <doctest/doctest.h>

using namespace preloadrun;

TEST_CASE("log::parse_level") {
    CHECK(log::parse_level("debug") == spdlog::level::debug);
    CHECK(log::parse_level("warn") == spdlog::level::warn);
    CHECK(log::parse_level("off") == spdlog::level::off);
    CHECK_THROWS_AS(log::parse_level("loud"), Error);
}

TEST_CASE("log::adjust_level") {
    CHECK(log::adjust_level(spdlog::level::info, 1, 0) == spdlog::level::debug);
    CHECK(log::adjust_level(spdlog::level::info, 5, 0) == spdlog::level::trace);
    CHECK(log::adjust_level(spdlog::level::info, 0, 2) == spdlog::level::err);
    CHECK(log::adjust_level(spdlog::level::info, 0, 10) == spdlog::level::off);
}

TEST_CASE("log::want_color is off with NO_COLOR") {
    ::setenv("NO_COLOR", "1", 1);
    CHECK_FALSE(log::want_color());
    ::unsetenv("NO_COLOR");
}

TEST_CASE("log::setup to a file names the subsystem and honours the level") {
    testsupport::TempDir dir;
    auto file = (dir / "log.txt").string();
    log::setup({.program = "test", .level = spdlog::level::info, .file = file, .color = false});
    auto logger = log::get("unit.sub");
    logger->debug("hidden line");
    logger->info("visible line");
    logger->flush();
    auto text = read_text_file(file);
    CHECK(text.find("visible line") != std::string::npos);
    CHECK(text.find("unit.sub") != std::string::npos);
    CHECK(text.find("hidden line") == std::string::npos);
    log::Config plain;
    plain.program = "test";
    log::setup(plain);
}
