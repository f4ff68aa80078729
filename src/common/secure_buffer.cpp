#include "preloadrun/common/secure_buffer.hpp"

#include "preloadrun/common/secure_arena.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <cstring>
#include <utility>

namespace preloadrun {

SecureBuffer::SecureBuffer(std::size_t size) : size_(size), capacity_(size) {
    if (size == 0) {
        return;
    }
    data_ = static_cast<std::uint8_t*>(SecureArena::instance().allocate(size)); // zeroed
}

SecureBuffer::SecureBuffer(const void* data, std::size_t size) : SecureBuffer(size) {
    if (size != 0) {
        std::memcpy(data_, data, size);
    }
}

SecureBuffer::SecureBuffer(const SecureBuffer& other) : SecureBuffer(other.data_, other.size_) {}

SecureBuffer& SecureBuffer::operator=(const SecureBuffer& other) {
    if (this != &other) {
        SecureBuffer copy(other);
        *this = std::move(copy);
    }
    return *this;
}

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
}

SecureBuffer::~SecureBuffer() {
    release();
}

void SecureBuffer::truncate(std::size_t size) noexcept {
    if (size < size_) {
        secure_wipe(data_ + size, size_ - size);
        size_ = size;
    }
}

void SecureBuffer::release() noexcept {
    if (data_ != nullptr) {
        SecureArena::instance().deallocate(data_, capacity_); // wipes
    }
    data_ = nullptr;
    size_ = capacity_ = 0;
}

__attribute__((noinline)) void wipe_stack() noexcept {
    unsigned char below[kStackWipe];
    secure_wipe(below, sizeof below);
    __asm__ volatile("" : : "r"(below) : "memory");
}

} // namespace preloadrun
