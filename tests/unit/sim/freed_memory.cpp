#include "freed_memory.hpp"

#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <new>

namespace simtest {

namespace {
thread_local FreedWatch* active = nullptr;
} // namespace

FreedWatch::FreedWatch(std::vector<std::string> needles) : needles_(std::move(needles)) {
    active = this;
}

FreedWatch::~FreedWatch() {
    active = nullptr;
}

void FreedWatch::inspect(const void* block, std::size_t size) noexcept {
    ++blocks_;
    for (const auto& needle : needles_) {
        if (::memmem(block, size, needle.data(), needle.size()) != nullptr) {
            ++hits_;
            return;
        }
    }
}

} // namespace simtest

namespace {

void* allocate(std::size_t size) {
    if (void* p = std::malloc(size == 0 ? 1 : size)) {
        return p;
    }
    throw std::bad_alloc();
}

void release(void* p) noexcept {
    if (p == nullptr) {
        return;
    }
    if (auto* watch = simtest::active) {
        simtest::active = nullptr; // the search allocates nothing, but be sure
        watch->inspect(p, ::malloc_usable_size(p));
        simtest::active = watch;
    }
    std::free(p);
}

} // namespace

// The replaceable global allocation functions (plain and array forms): the
// same malloc and free as the defaults, with a look at each freed block.
void* operator new(std::size_t size) {
    return allocate(size);
}
void* operator new[](std::size_t size) {
    return allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept {
    release(p);
}
void operator delete[](void* p) noexcept {
    release(p);
}
void operator delete(void* p, std::size_t) noexcept {
    release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    release(p);
}
