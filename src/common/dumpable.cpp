#include "preloadrun/common/dumpable.hpp"

#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <string>
#include <sys/prctl.h>
#include <system_error>

namespace preloadrun {

void make_undumpable() {
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        const int err = errno;
        throw Error(ErrorCode::internal, "cannot make this process undumpable (prctl: " +
                                             std::generic_category().message(err) + ")");
    }
}

bool is_dumpable() {
    return ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) > 0;
}

} // namespace preloadrun
