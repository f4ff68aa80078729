#include "preloadrun/hsm/protobuf_logs.hpp"

#include "preloadrun/common/log.hpp"

#include <google/protobuf/stubs/logging.h>
#include <string>

namespace preloadrun::hsm::codec {

namespace {

// libprotobuf writes its complaints about malformed input (e.g. a string that
// is not UTF-8) straight to stderr. Those inputs already become
// Error(protocol); send the text to our "hsm" logger at debug level instead.
void protobuf_log(google::protobuf::LogLevel level, const char* /*file*/, int /*line*/,
                  const std::string& message) {
    log::get("hsm")->log(level >= google::protobuf::LOGLEVEL_FATAL ? spdlog::level::critical
                                                                   : spdlog::level::debug,
                         "protobuf: {}", message);
}

} // namespace

void route_protobuf_logs() {
    google::protobuf::SetLogHandler(protobuf_log);
}

} // namespace preloadrun::hsm::codec
