#pragma once
// Memory for secrets (passphrases, unwrapped keys), from the SecureArena:
// locked in RAM where the system allows it, out of core dumps and of forked
// children, wiped when released. Never reallocated: its address and size are
// fixed until it is released (truncate only shrinks the logical size).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace preloadrun {

class SecureBuffer {
public:
    SecureBuffer() noexcept = default;
    explicit SecureBuffer(std::size_t size);
    SecureBuffer(const void* data, std::size_t size);
    static SecureBuffer from(std::string_view text) { return {text.data(), text.size()}; }
    SecureBuffer(const SecureBuffer& other);
    SecureBuffer& operator=(const SecureBuffer& other);
    SecureBuffer(SecureBuffer&& other) noexcept;
    SecureBuffer& operator=(SecureBuffer&& other) noexcept;
    ~SecureBuffer();

    std::uint8_t* data() noexcept { return data_; }
    const std::uint8_t* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::span<const std::uint8_t> span() const noexcept { return {data_, size_}; }
    std::string_view view() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
    // Shrinks the logical size (the tail is wiped); never grows.
    void truncate(std::size_t size) noexcept;

private:
    void release() noexcept;
    std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

// Overwrites the stack below the caller's frame (kStackWipe bytes), where
// the functions it called may have left copies of a secret they handled: a
// serializer's buffers, a parser's. Call it once the secret has gone through
// them. A thread's stack outlives the thread (it is cached for the next one),
// so what is left there would stay.
inline constexpr std::size_t kStackWipe = 32 * 1024;
void wipe_stack() noexcept;

} // namespace preloadrun
