#pragma once
// A private temporary directory per test, removed when the test passes and
// kept (with its path printed) when it fails, for a look at what was left.

#include <filesystem>
#include <sys/types.h>

namespace testsupport {

// The permission bits (07777) of `p`, a symlink not followed; fails the test
// when there is nothing at `p`.
mode_t mode_of(const std::filesystem::path& p);

class TempDir {
public:
    TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir();
    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path operator/(const std::filesystem::path& p) const { return path_ / p; }

private:
    std::filesystem::path path_;
};

} // namespace testsupport
