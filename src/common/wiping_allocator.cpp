#include "preloadrun/common/wiping_allocator.hpp"

#include <cstring>

namespace preloadrun {

void secure_wipe(void* data, std::size_t size) noexcept {
    if (data != nullptr && size != 0) {
        ::explicit_bzero(data, size);
    }
}

bool constant_time_equal(const void* a, const void* b, std::size_t size) noexcept {
    const auto* x = static_cast<const volatile unsigned char*>(a);
    const auto* y = static_cast<const volatile unsigned char*>(b);
    unsigned char differ = 0;
    for (std::size_t i = 0; i < size; ++i) {
        differ = static_cast<unsigned char>(differ | (x[i] ^ y[i]));
    }
    return differ == 0;
}

} // namespace preloadrun
