#include "preloadrun/common/wiping_allocator.hpp"

#include <openssl/crypto.h>

namespace preloadrun {

void secure_wipe(void* data, std::size_t size) noexcept {
    if (data != nullptr && size != 0) {
        OPENSSL_cleanse(data, size);
    }
}

} // namespace preloadrun
