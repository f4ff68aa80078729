#include "preloadrun/common/fd.hpp"

#include <unistd.h>

namespace preloadrun {

void Fd::reset(int fd) noexcept {
    if (fd_ >= 0 && fd_ != fd) {
        ::close(fd_);
    }
    fd_ = fd;
}

} // namespace preloadrun
