#pragma once
// Records decoded from the Security World's files, each kept while its file
// stays the same file (device, inode, size, modification and change times):
// a key file read at every key load (32 modules, 1,000 keys: 32,000 loads)
// is read and decoded once, then costs one fstatat. A file written since
// (a new file renamed over it, a changed passphrase) is read again.
// Thread-safe.

#include "preloadrun/common/dir.hpp"

#include <mutex>
#include <string>
#include <sys/stat.h>
#include <unordered_map>

namespace preloadrun::sim {

template <class Record> class FileCache {
public:
    // The record of the file `name` of `dir`: the one kept, or what `read`
    // returns (it reads and decodes the file, and throws as it would).
    template <class Read> Record get(const Dir& dir, const std::string& name, Read&& read) {
        const auto st = dir.stat_entry(name);
        if (st) {
            std::lock_guard lock(mutex_);
            if (auto it = entries_.find(name); it != entries_.end() && same(it->second, *st)) {
                return it->second.record;
            }
        }
        Record record = read();
        if (st) { // stat before the read: a file changed in between is read again next time
            std::lock_guard lock(mutex_);
            if (entries_.size() >= kMaxEntries) {
                entries_.clear();
            }
            entries_.insert_or_assign(name, Entry{*st, record});
        }
        return record;
    }

private:
    static constexpr std::size_t kMaxEntries = 65536;
    struct Entry {
        struct stat st;
        Record record;
    };
    static bool same(const Entry& e, const struct stat& st) noexcept {
        return e.st.st_dev == st.st_dev && e.st.st_ino == st.st_ino && e.st.st_size == st.st_size &&
               e.st.st_mtim.tv_sec == st.st_mtim.tv_sec &&
               e.st.st_mtim.tv_nsec == st.st_mtim.tv_nsec &&
               e.st.st_ctim.tv_sec == st.st_ctim.tv_sec &&
               e.st.st_ctim.tv_nsec == st.st_ctim.tv_nsec;
    }

    std::mutex mutex_;
    std::unordered_map<std::string, Entry> entries_;
};

} // namespace preloadrun::sim
