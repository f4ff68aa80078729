#pragma once
// Watches the tokens file: a background thread waits on inotify for the
// file's directory and bumps a counter when the file is replaced
// (IN_MOVED_TO: atomic publication by rename) or rewritten (IN_CLOSE_WRITE).
// Readers compare the counter with the value they last saw: an atomic load,
// no system call, on the hot path.

#include "preloadrun/common/fd.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <thread>

namespace preloadrun::pkcs11 {

// A count of the tokens file's changes. The reloader compares it with the
// value it last saw; ReloadWatch counts from inotify, a test by hand.
class ChangeCount {
public:
    ChangeCount() = default;
    ChangeCount(const ChangeCount&) = delete;
    ChangeCount& operator=(const ChangeCount&) = delete;
    virtual ~ChangeCount() = default;

    std::uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }
    void changed() noexcept { version_.fetch_add(1, std::memory_order_acq_rel); }

private:
    std::atomic<std::uint64_t> version_{0};
};

class ReloadWatch final : public ChangeCount {
public:
    // Starts watching; throws Error(io) when inotify cannot watch the directory.
    explicit ReloadWatch(const std::filesystem::path& file);
    ReloadWatch(const ReloadWatch&) = delete;
    ReloadWatch& operator=(const ReloadWatch&) = delete;
    ~ReloadWatch() override;

private:
    void run() noexcept;

    std::string name_;
    Fd inotify_;
    Fd stop_;
    std::thread thread_;
};

} // namespace preloadrun::pkcs11
