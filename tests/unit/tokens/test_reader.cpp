#include "preloadrun/tokens/environment.hpp"
#include "preloadrun/tokens/reader.hpp"
#include "sample.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::tokens;

namespace {

// The handles current on each token, as (module, handle) pairs.
std::vector<std::vector<std::pair<std::uint32_t, std::uint64_t>>>
handles_of(const std::vector<Token>& tokens) {
    std::vector<std::vector<std::pair<std::uint32_t, std::uint64_t>>> out;
    for (const auto& t : tokens) {
        auto& row = out.emplace_back();
        for (const auto& l : t.loaded) {
            row.emplace_back(l.module, l.handle);
        }
    }
    return out;
}

} // namespace

TEST_CASE("tokens::current_handles: for these modules and generations, in this instance") {
    // Token 0 is loaded on module 1 (generation 3, handle 42) and module 2
    // (generation 1, handle 7); token 1 nowhere.
    const auto file = testsupport::sample_tokens_file();
    const auto& instance = file.service_instance;
    using Handles = std::vector<std::vector<std::pair<std::uint32_t, std::uint64_t>>>;

    SUBCASE("every module at the file's generation: every handle") {
        const auto current = current_handles(file, instance, {{1, 3}, {2, 1}});
        REQUIRE(current.size() == 2);
        CHECK(current[0].name == "mycard");
        CHECK(current[0].hash == file.tokens[0].hash);
        CHECK(current[1].name == "ops");
        CHECK(handles_of(current) == Handles{{{1, 42}, {2, 7}}, {}});
    }
    SUBCASE("a module cleared since (another generation): its handles mean nothing") {
        CHECK(handles_of(current_handles(file, instance, {{1, 4}, {2, 1}})) ==
              Handles{{{2, 7}}, {}});
    }
    SUBCASE("a module the reader does not track: left out") {
        CHECK(handles_of(current_handles(file, instance, {{1, 3}})) == Handles{{{1, 42}}, {}});
    }
    SUBCASE("another instance of the service: no handle, every token still listed") {
        const auto current =
            current_handles(file, "ffeeddccbbaa99887766554433221100", {{1, 3}, {2, 1}});
        CHECK(handles_of(current) == Handles{{}, {}});
        CHECK(current.size() == 2);
    }
}

TEST_CASE("tokens::version_of tells the owner and the generation") {
    const auto file = testsupport::sample_tokens_file();
    CHECK(version_of(file) == FileVersion{file.owner.instance, 7});
    auto again = file;
    again.owner.instance = "ffeeddccbbaa99887766554433221100";
    CHECK_FALSE(version_of(again) == version_of(file)); // a new preloadrun at the same path
}

TEST_CASE("tokens::published_by_another_user") {
    Liveness liveness;
    liveness.status = Status::live;
    CHECK_FALSE(published_by_another_user(liveness, 1000)); // nobody can tell
    liveness.file_uid = 1000;
    CHECK_FALSE(published_by_another_user(liveness, 1000));
    const auto why = published_by_another_user(liveness, 1001);
    REQUIRE(why);
    CHECK(why->find("published by uid 1000 and this process runs as uid 1001") !=
          std::string::npos);
    CHECK(why->find(env::kTokensFile) != std::string::npos);
}

TEST_CASE("tokens::env::flag_on: set, not empty, not 0") {
    CHECK(env::flag_on(env::kOn));
    CHECK(env::flag_on("yes"));
    CHECK_FALSE(env::flag_on(nullptr));
    CHECK_FALSE(env::flag_on(""));
    CHECK_FALSE(env::flag_on("0"));
}
