#include "model/ossl.hpp"

#include <openssl/err.h>
#include <string>

namespace preloadrun::sim::ossl {

void fail(ErrorCode code, std::string_view what) {
    std::string message(what);
    unsigned long err = ERR_get_error();
    if (err != 0) {
        char text[256];
        ERR_error_string_n(err, text, sizeof text);
        message += ": ";
        message += text;
    }
    ERR_clear_error();
    throw Error(code, message);
}

void clear_errors() noexcept {
    ERR_clear_error();
}

} // namespace preloadrun::sim::ossl
