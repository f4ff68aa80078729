// libFuzzer target: the tokens file parser, which the PKCS#11 module runs on
// a file that any process of the user could have written.
#include "preloadrun/common/error.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto file = preloadrun::tokens::decode(text);
        // A file that decodes must survive a round trip unchanged.
        if (preloadrun::tokens::decode(preloadrun::tokens::encode(file)) != file) {
            __builtin_trap();
        }
    } catch (const preloadrun::Error&) {
        // Refusing bad input is the expected outcome.
    }
    return 0;
}
