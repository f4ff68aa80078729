#include "preloadrun/common/duration.hpp"

#include "preloadrun/common/error.hpp"

#include <charconv>
#include <cstdint>
#include <string>

namespace preloadrun {

std::chrono::milliseconds parse_duration(std::string_view text, BareNumber bare) {
    const std::string quoted = "'" + std::string(text) + "'";
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end == text.data() || value > 1'000'000'000) {
        throw Error(ErrorCode::usage, quoted + " is not a duration (e.g. 5m, 300s, 1500ms)");
    }
    const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
    if (unit.empty()) {
        if (bare == BareNumber::milliseconds) {
            return std::chrono::milliseconds(value);
        }
        const std::string number(text);
        throw Error(ErrorCode::usage, quoted + " has no unit: write " + number + "s, " + number +
                                          "m, " + number + "ms or " + number + "h");
    }
    if (unit == "ms") {
        return std::chrono::milliseconds(value);
    }
    if (unit == "s") {
        return std::chrono::seconds(value);
    }
    if (unit == "m") {
        return std::chrono::minutes(value);
    }
    if (unit == "h") {
        return std::chrono::hours(value);
    }
    throw Error(ErrorCode::usage, "unknown unit in " + quoted + " (use ms, s, m or h)");
}

} // namespace preloadrun
