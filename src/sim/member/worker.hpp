#pragma once
// A member's worker: the process that loads the member's PKCS#11 library, so
// that a crash, hang or leak in a vendor's library takes down that member
// only. The service starts it (worker_process.hpp) as its own program with
// kWorkerCommand as the first argument and the channels (socketpairs) as
// descriptors 3, 4, ...; the protocol is worker.proto. The last channel is
// for slot events (C_WaitForSlotEvent), where the library supports them.

namespace preloadrun::sim::member {

inline constexpr const char* kWorkerCommand = "__member-worker";
inline constexpr int kFirstChannelFd = 3;
// 64 sessions (max-sessions), the probes' one and the slot events' one.
inline constexpr int kMaxChannels = 66;

// Serves `channels` channels until channel 0 closes; the exit status.
int run_worker(int channels) noexcept;

} // namespace preloadrun::sim::member
