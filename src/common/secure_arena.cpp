#include "preloadrun/common/secure_arena.hpp"

#include "preloadrun/common/log.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <iterator>
#include <map>
#include <new>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <system_error>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define PRELOADRUN_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PRELOADRUN_ARENA_ASAN 1
#endif
#endif
#ifdef PRELOADRUN_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace preloadrun {

namespace {

// Free memory is poisoned for AddressSanitizer, as the heap's is: a buffer
// used after release, or overrun into free space, is reported.
void poison(void* data, std::size_t size) noexcept {
#ifdef PRELOADRUN_ARENA_ASAN
    ASAN_POISON_MEMORY_REGION(data, size);
#else
    (void)data;
    (void)size;
#endif
}

void unpoison(void* data, std::size_t size) noexcept {
#ifdef PRELOADRUN_ARENA_ASAN
    ASAN_UNPOISON_MEMORY_REGION(data, size);
#else
    (void)data;
    (void)size;
#endif
}

// Sizes beyond kMaxSize are refused before they are rounded.
constexpr std::size_t kMaxSize = SIZE_MAX / 4;

std::size_t round_up(std::size_t size, std::size_t unit) noexcept {
    return (size + unit - 1) / unit * unit;
}

// What an allocation of `size` bytes occupies.
std::size_t block_size(std::size_t size) noexcept {
    return round_up(size == 0 ? 1 : size, SecureArena::kAlignment);
}

std::size_t page_size() noexcept {
    static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

// The system call itself: the sanitizers' runtimes replace mlock() with a
// function that locks nothing and reports success.
int default_lock(const void* data, std::size_t size) {
    return static_cast<int>(::syscall(SYS_mlock, data, size));
}

// Both pieces of advice; the errno of the first refused, or 0.
int advise(void* data, std::size_t size) noexcept {
    if (::madvise(data, size, MADV_DONTDUMP) != 0) {
        return errno;
    }
    if (::madvise(data, size, MADV_WIPEONFORK) != 0) {
        return errno;
    }
    return 0;
}

auto logger() {
    return log::get("secrets");
}

} // namespace

// One mapping, unmapped (wiped first) when the chunk goes.
struct SecureArena::Chunk {
    std::uint8_t* base = nullptr;
    std::size_t size = 0;
    bool locked = false;
    std::size_t in_use = 0;
    // offset -> length of each free block; no two blocks touch (merged).
    std::map<std::size_t, std::size_t> free;

    explicit Chunk(std::size_t bytes) : size(bytes) {
        void* mapped =
            ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapped == MAP_FAILED) {
            throw std::bad_alloc();
        }
        base = static_cast<std::uint8_t*>(mapped);
    }
    Chunk(const Chunk&) = delete;
    Chunk& operator=(const Chunk&) = delete;
    ~Chunk() {
        unpoison(base, size); // the addresses may be mapped again, for anything
        secure_wipe(base, size);
        ::munmap(base, size);
    }

    bool contains(const void* data) const noexcept {
        const auto* p = static_cast<const std::uint8_t*>(data);
        return p >= base && p < base + size;
    }

    // First fit: the lowest free block that is large enough, split.
    void* take(std::size_t size_needed) {
        for (auto it = free.begin(); it != free.end(); ++it) {
            if (it->second < size_needed) {
                continue;
            }
            const auto [offset, length] = *it;
            if (length > size_needed) {
                free.emplace_hint(std::next(it), offset + size_needed, length - size_needed);
            }
            free.erase(it);
            in_use += size_needed;
            unpoison(base + offset, size_needed);
            return base + offset;
        }
        return nullptr;
    }

    // Back into the free list, merged with the blocks on either side.
    void give_back(std::size_t offset, std::size_t length) noexcept {
        in_use -= length;
        poison(base + offset, length);
        auto next = free.lower_bound(offset);
        if (next != free.end() && offset + length == next->first) {
            length += next->second;
            next = free.erase(next);
        }
        if (next != free.begin()) {
            auto previous = std::prev(next);
            if (previous->first + previous->second == offset) {
                previous->second += length;
                return;
            }
        }
        try {
            free.emplace_hint(next, offset, length);
        } catch (const std::bad_alloc&) {
            // No memory for the entry: the block stays out of use until the
            // chunk goes. It is wiped already.
        }
    }
};

SecureArena::SecureArena(std::size_t chunk_size, LockFunction lock)
    : chunk_size_(round_up(std::clamp<std::size_t>(chunk_size, 1, kMaxSize), page_size())),
      lock_(lock != nullptr ? lock : &default_lock) {}

SecureArena::~SecureArena() = default;

SecureArena& SecureArena::instance() {
    static SecureArena* arena = [] {
        auto* made = new SecureArena();
        ::pthread_atfork(&SecureArena::before_fork, &SecureArena::after_fork,
                         &SecureArena::after_fork);
        return made;
    }();
    return *arena;
}

void SecureArena::before_fork() noexcept {
    instance().mutex_.lock();
}

void SecureArena::after_fork() noexcept {
    instance().mutex_.unlock();
}

SecureArena::Chunk& SecureArena::add_chunk(std::size_t at_least) {
    const std::size_t size = std::max(chunk_size_, round_up(at_least, page_size()));
    auto chunk = std::make_unique<Chunk>(size);
    void* mapped = chunk->base;
    if (const int err = advise(mapped, size); err != 0 && !warned_advice_) {
        warned_advice_ = true;
        logger()->warn("cannot keep secrets out of core dumps and forked children "
                       "(madvise: {}; Linux 4.14 or later is needed)",
                       std::generic_category().message(err));
    }
    chunk->locked = lock_(mapped, size) == 0;
    if (!chunk->locked && !warned_lock_) {
        const int err = errno;
        warned_lock_ = true;
        logger()->warn("cannot lock {} KiB of memory for secrets ({}): they may be written to "
                       "swap; raise the locked-memory limit (ulimit -l, LimitMEMLOCK=) to lock "
                       "them",
                       size / 1024, std::generic_category().message(err));
    }
    chunk->free.emplace(0, size);
    poison(mapped, size);
    chunks_.push_back(std::move(chunk));
    return *chunks_.back();
}

void* SecureArena::allocate(std::size_t size) {
    if (size > kMaxSize) {
        throw std::bad_alloc();
    }
    const std::size_t needed = block_size(size);
    std::lock_guard lock(mutex_);
    for (const auto& chunk : chunks_) {
        if (void* data = chunk->take(needed)) {
            return data;
        }
    }
    return add_chunk(needed).take(needed);
}

void SecureArena::deallocate(void* data, std::size_t size) noexcept {
    if (data == nullptr) {
        return;
    }
    const std::size_t length = block_size(size);
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
        Chunk& chunk = *chunks_[i];
        if (!chunk.contains(data)) {
            continue;
        }
        secure_wipe(data, length);
        chunk.give_back(static_cast<std::size_t>(static_cast<std::uint8_t*>(data) - chunk.base),
                        length);
        if (chunk.in_use == 0 && chunks_.size() > 1) {
            release_empty(i);
        }
        return;
    }
    // Not from this arena: nothing to give back (SecureBuffer never does this).
}

// An empty chunk beyond the first goes back to the system.
void SecureArena::release_empty(std::size_t index) noexcept {
    chunks_.erase(chunks_.begin() + static_cast<std::ptrdiff_t>(index));
}

SecureArena::Stats SecureArena::stats() const {
    std::lock_guard lock(mutex_);
    Stats out;
    for (const auto& chunk : chunks_) {
        ++out.chunks;
        out.locked_chunks += chunk->locked ? 1 : 0;
        out.bytes_mapped += chunk->size;
        out.bytes_in_use += chunk->in_use;
    }
    return out;
}

} // namespace preloadrun
