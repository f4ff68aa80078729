#include "preloadrun/common/clock.hpp"

namespace preloadrun {

const Clock& steady_clock() {
    static const SteadyClock clock;
    return clock;
}

} // namespace preloadrun
