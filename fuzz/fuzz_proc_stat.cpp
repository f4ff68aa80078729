// libFuzzer target: the start time in the text of /proc/<pid>/stat, which
// tells a tokens file's live owner from a process that reuses its pid. The
// command name in that text is whatever the process chose, so any process
// of the machine may write into it.
//
// Input: a first byte, then either
//   even first byte: a command name and a start time, laid out as the kernel
//     does; the start time read back must be the one written, whatever the
//     command name holds;
//   odd first byte: the whole text of a stat file (no crash, no sanitizer
//     report).

#include "preloadrun/common/process.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

constexpr std::size_t kCommSize = 15; // TASK_COMM_LEN - 1

void as_kernel_writes(const std::uint8_t* data, std::size_t size) {
    std::uint64_t start_time = 0;
    const std::size_t n = std::min(size, sizeof start_time);
    std::memcpy(&start_time, data, n);
    // The name: what is left, up to the kernel's length, NUL excluded.
    std::string comm(reinterpret_cast<const char*>(data) + n, std::min(size - n, kCommSize));
    comm.erase(std::remove(comm.begin(), comm.end(), '\0'), comm.end());

    std::string stat = "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 112 0 0 0 0 0 0 0 20 0 1 0 ";
    stat += std::to_string(start_time);
    stat += " 5791744 274 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 "
            "0 0 0 0\n";
    if (preloadrun::proc_stat_start_time(stat) != start_time) {
        std::abort(); // the command name moved the fields
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    if ((data[0] & 1) == 0) {
        as_kernel_writes(data + 1, size - 1);
    } else {
        (void)preloadrun::proc_stat_start_time(
            std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
    }
    return 0;
}
