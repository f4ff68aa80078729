#include "member/p11.hpp"
#include "member/worker.hpp"
#include "member/worker_process.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim::member;
using testsupport::code_of;

namespace {

// A worker of the real program (hsmsim) for a library that is not there.
WorkerSpec spec_for(int channels) {
    WorkerSpec spec;
    spec.member = "m";
    spec.program = HSMSIM_PATH;
    spec.init.set_library("/nonexistent/libnothing.so");
    spec.init.mutable_token()->set_label("t");
    spec.channels = channels;
    spec.timeout = std::chrono::seconds(10);
    return spec;
}

} // namespace

TEST_CASE("member::Worker starts the program's worker, which says why the library cannot load") {
    // One session and max-sessions 64, each with the probes' channel and the slot events'.
    for (int channels : {2, kMaxChannels}) {
        CAPTURE(channels);
        try {
            Worker worker(spec_for(channels));
            FAIL("a worker started for a library that does not exist");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::module_not_usable);
            CHECK(std::string(e.what()).find("member m: dlopen") == 0);
            CHECK(std::string(e.what()).find("/nonexistent/libnothing.so") != std::string::npos);
        }
    }
    CHECK(code_of([] { Worker worker(spec_for(kMaxChannels + 1)); }) == ErrorCode::usage);
    CHECK(code_of([] { Worker worker(spec_for(1)); }) == ErrorCode::usage);
}
