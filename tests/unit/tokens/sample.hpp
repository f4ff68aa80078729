#pragma once
// A tokens file with every field set, for the tokens tests.

#include "preloadrun/tokens/tokens_file.hpp"

namespace testsupport {

inline preloadrun::tokens::TokensFile sample_tokens_file() {
    using namespace preloadrun::tokens;
    TokensFile f;
    f.generation = 7;
    f.owner.process = preloadrun::self_identity();
    f.owner.instance = "00112233445566778899aabbccddeeff";
    f.world = "0123456789abcdef0123456789abcdef01234567";
    f.service_instance = "00112233445566778899aabbccddeeff";
    f.high_availability = true;
    f.modules = {{1, "AAAA-BBBB-CCCC", ModuleState::usable, 3, 2, 1700000000000, false},
                 {2, "DDDD-EEEE-FFFF", ModuleState::failed, 1, 1, 0, true}};
    f.tokens = {{TokenType::softcard,
                 "mycard",
                 "ffeeddccbbaa99887766554433221100ffeeddcc",
                 {{1, "AAAA-BBBB-CCCC", 3, 42}, {2, "DDDD-EEEE-FFFF", 1, 7}}},
                {TokenType::cardset, "ops", "0000000000000000000000000000000000000001", {}}};
    return f;
}

} // namespace testsupport
