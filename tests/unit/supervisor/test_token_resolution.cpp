#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include "token_resolution.hpp"

#include <cctype>
#include <doctest/doctest.h>
#include <functional>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::supervisor;

namespace {

std::vector<hsm::TokenInfo> world() {
    return {{hsm::TokenType::softcard, "alpha", Bytes(20, 0xa1)},
            {hsm::TokenType::softcard, "beta", Bytes(20, 0xb2)},
            {hsm::TokenType::cardset, "alpha", Bytes(20, 0xc3)}};
}

using testsupport::code_of;

} // namespace

TEST_CASE("supervisor::parse_passphrase_file") {
    auto parsed = [](const std::string& text) {
        const auto file = parse_passphrase_file(text);
        return file.token + "|" + file.path;
    };
    CHECK(parsed("pass.txt") == "|pass.txt");
    CHECK(parsed("mycard=/run/secrets/mycard") == "mycard|/run/secrets/mycard");
    CHECK(parsed("a=b=c") == "a|b=c");
    CHECK(parsed("=pass") == "|=pass");        // no TOKEN before '='
    CHECK(parsed("./a=b") == "|./a=b");        // a '/' first: a file name
    CHECK(parsed("dir/a=b") == "|dir/a=b");    // likewise
    CHECK(parsed("a=./dir/b") == "a|./dir/b"); // the '=' first: TOKEN=FILE
    CHECK(code_of([] { parse_passphrase_file("mycard="); }) == ErrorCode::usage);
}

TEST_CASE("supervisor::resolve_tokens") {
    SUBCASE("by name, per type") {
        auto got = resolve_tokens({{"cardset", "alpha"}, {"softcard", "alpha"}}, world());
        REQUIRE(got.size() == 2);
        CHECK(got[0].hash == Bytes(20, 0xc3));
        CHECK(got[1].hash == Bytes(20, 0xa1));
    }
    SUBCASE("by hash, any case") {
        auto hash = to_hex(Bytes(20, 0xb2));
        for (auto& c : hash) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        auto got = resolve_tokens({{"softcard", hash}}, world());
        CHECK(got.at(0).name == "beta");
    }
    SUBCASE("unknown names the known ones") {
        std::string message;
        CHECK(code_of(
                  [] {
                      resolve_tokens({{"softcard", "gamma"}}, world());
                  },
                  &message) == ErrorCode::not_found);
        CHECK(message.find("alpha, beta") != std::string::npos);
    }
    SUBCASE("a type with no token") {
        std::string message;
        CHECK(code_of(
                  [] {
                      resolve_tokens({{"cardset", "x"}}, {});
                  },
                  &message) == ErrorCode::not_found);
        CHECK(message.find("no cardsets") != std::string::npos);
    }
    SUBCASE("the same token twice, by name and by hash") {
        CHECK(code_of([] {
                  resolve_tokens({{"softcard", "alpha"}, {"softcard", to_hex(Bytes(20, 0xa1))}},
                                 world());
              }) == ErrorCode::usage);
    }
}

TEST_CASE("supervisor::collect_passphrases") {
    testsupport::TempDir dir;
    write_file_atomic(dir / "all", std::string_view("shared\n"));
    write_file_atomic(dir / "b", std::string_view("for-beta\n"));
    std::vector<TokenRequest> requests{{"softcard", "alpha"}, {"softcard", "beta"}};
    auto tokens = resolve_tokens(requests, world());
    SUBCASE("a file for all, and one for a token by name") {
        Options options;
        options.passphrase_files = {{"", (dir / "all").string()}, {"beta", (dir / "b").string()}};
        auto got = collect_passphrases(options, requests, tokens);
        CHECK(got.at(0).view() == "shared");
        CHECK(got.at(1).view() == "for-beta");
    }
    SUBCASE("one line per token from a descriptor") {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        std::string_view lines = "one\ntwo\n";
        REQUIRE(::write(fds[1], lines.data(), lines.size()) == static_cast<ssize_t>(lines.size()));
        ::close(fds[1]);
        Options options;
        options.passphrase_fd = fds[0];
        auto got = collect_passphrases(options, requests, tokens);
        CHECK(got.at(0).view() == "one");
        CHECK(got.at(1).view() == "two");
        ::close(fds[0]);
    }
    SUBCASE("a file for a token that is not loaded is a usage error") {
        Options options;
        options.passphrase_files = {{"gamma", (dir / "b").string()}};
        CHECK(code_of([&] { collect_passphrases(options, requests, tokens); }) == ErrorCode::usage);
    }
}
