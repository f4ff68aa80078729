#include "preloadrun/tokens/module_limit.hpp"

namespace preloadrun::tokens {

ModuleLimit::Verdict ModuleLimit::admit(std::uint32_t number) {
    if (tracked_.count(number) != 0) {
        return Verdict::tracked;
    }
    if (tracked_.size() < kMaxModules) {
        tracked_.insert(number);
        return Verdict::admitted;
    }
    return refused_.insert(number).second ? Verdict::refused : Verdict::refused_again;
}

} // namespace preloadrun::tokens
