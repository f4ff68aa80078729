#pragma once
// An allocator for standard containers that hold secrets on the ordinary
// heap (protocol frames, decoded files): whatever it gives back is wiped
// first, so a container that grows, shrinks or goes away leaves no copy of
// its contents in freed memory. Unlike SecureBuffer, the memory is neither
// locked nor kept out of core dumps: use it for data too large or too
// short-lived for the locked arena.
//
// SecretString keeps up to 15 characters inside the object itself (the
// short-string optimisation), where no allocator sees them: wipe such a
// string with secure_wipe(s.data(), s.size()) before it goes, or reserve()
// more than that first.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace preloadrun {

// Overwrites `size` bytes in a way the compiler keeps (explicit_bzero: no
// OpenSSL needed, so the programs that only wipe do not load libcrypto).
void secure_wipe(void* data, std::size_t size) noexcept;
// Whether two buffers of `size` bytes are equal, in a time that does not
// depend on where they differ (for secrets: passphrases, MACs).
bool constant_time_equal(const void* a, const void* b, std::size_t size) noexcept;

// Allocates through `Upstream` (the heap; a test may watch what it gets back).
template <class T, class Upstream = std::allocator<T>> class WipingAllocator {
public:
    using value_type = T;
    template <class U> struct rebind {
        using other =
            WipingAllocator<U, typename std::allocator_traits<Upstream>::template rebind_alloc<U>>;
    };

    WipingAllocator() noexcept = default;
    explicit WipingAllocator(const Upstream& upstream) noexcept : upstream_(upstream) {}
    template <class U, class UpstreamU>
    WipingAllocator(const WipingAllocator<U, UpstreamU>& other) noexcept
        : upstream_(other.upstream()) {}

    T* allocate(std::size_t count) { return upstream_.allocate(count); }
    void deallocate(T* data, std::size_t count) noexcept {
        secure_wipe(data, count * sizeof(T));
        upstream_.deallocate(data, count);
    }

    const Upstream& upstream() const noexcept { return upstream_; }
    template <class U, class UpstreamU>
    bool operator==(const WipingAllocator<U, UpstreamU>& other) const noexcept {
        return upstream_ == other.upstream();
    }

private:
    [[no_unique_address]] Upstream upstream_;
};

using SecretBytes = std::vector<std::uint8_t, WipingAllocator<std::uint8_t>>;
using SecretString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;

} // namespace preloadrun
