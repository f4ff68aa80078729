#pragma once
// The memory SecureBuffer lives in: chunks taken from mmap, locked in RAM
// once (mlock), left out of core dumps (MADV_DONTDUMP) and wiped in a child
// made by fork (MADV_WIPEONFORK: a child sees zeros where its parent's
// secrets were; the allocator's bookkeeping lives elsewhere, so the child's
// arena stays usable). Inside, a first-fit free list that merges neighbours;
// a full arena grows by another chunk. Freed memory is wiped at once, so all
// free memory is zero and every allocation starts zeroed.
//
// When the system refuses to lock (RLIMIT_MEMLOCK), the arena says so once,
// as a warning, and goes on unlocked.

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace preloadrun {

class SecureArena {
public:
    // How chunks are locked: the mlock system call unless a test says otherwise.
    using LockFunction = int (*)(const void*, std::size_t);

    static constexpr std::size_t kAlignment = 16;
    static constexpr std::size_t kDefaultChunkSize = std::size_t{64} * 1024;

    explicit SecureArena(std::size_t chunk_size = kDefaultChunkSize, LockFunction lock = nullptr);
    SecureArena(const SecureArena&) = delete;
    SecureArena& operator=(const SecureArena&) = delete;
    ~SecureArena(); // unmaps every chunk: nothing may be allocated any more

    // The process's arena. Never destroyed (secrets may be released during
    // static destruction); a fork keeps it usable in the child.
    static SecureArena& instance();

    // `size` zeroed bytes (at least one), aligned to kAlignment. Throws
    // std::bad_alloc when no memory can be mapped.
    void* allocate(std::size_t size);
    // Wipes and gives back what allocate(size) returned; `size` as asked.
    void deallocate(void* data, std::size_t size) noexcept;

    struct Stats {
        std::size_t chunks = 0;
        std::size_t locked_chunks = 0;
        std::size_t bytes_mapped = 0;
        std::size_t bytes_in_use = 0; // rounded up to kAlignment per allocation
    };
    Stats stats() const;

private:
    struct Chunk;
    Chunk& add_chunk(std::size_t at_least);
    void release_empty(std::size_t index) noexcept;
    // pthread_atfork handlers of instance(): no fork while the lock is held.
    static void before_fork() noexcept;
    static void after_fork() noexcept;

    std::size_t chunk_size_;
    LockFunction lock_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Chunk>> chunks_;
    bool warned_lock_ = false;
    bool warned_advice_ = false;
};

} // namespace preloadrun
