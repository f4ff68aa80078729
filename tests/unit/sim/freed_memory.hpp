#pragma once
// Watches what a test frees: while a FreedWatch lives, every heap block the
// same thread gives back through operator delete is searched, just before it
// goes, for the watch's needles. A secret found there would have stayed in
// freed memory. (freed_memory.cpp replaces the global operator new and
// delete of the test program to do so; it is linked into test_sim_model only.)

#include <cstddef>
#include <string>
#include <vector>

namespace simtest {

class FreedWatch {
public:
    explicit FreedWatch(std::vector<std::string> needles);
    FreedWatch(const FreedWatch&) = delete;
    FreedWatch& operator=(const FreedWatch&) = delete;
    ~FreedWatch();

    // Blocks freed so far that held a needle.
    std::size_t hits() const noexcept { return hits_; }
    // Blocks freed so far, to show the watch saw the code under test work.
    std::size_t blocks() const noexcept { return blocks_; }

    void inspect(const void* block, std::size_t size) noexcept;

private:
    std::vector<std::string> needles_;
    std::size_t hits_ = 0;
    std::size_t blocks_ = 0;
};

} // namespace simtest
