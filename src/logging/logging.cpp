// spdlog and fmt, compiled into this project rather than loaded from their
// shared libraries: every program and the PKCS#11 module link this static
// library (preloadrun_logging). A process then loads two libraries fewer and
// resolves none of their symbols at start, and the PKCS#11 module never
// shares spdlog's global registry with an application that has its own.
//
// The headers are used in their "compiled library" form everywhere
// (SPDLOG_COMPILED_LIB, fmt without FMT_HEADER_ONLY: the target's compile
// definitions); this file includes the definitions they leave out, once, and
// instantiates the templates the project uses.

#include <fmt/format-inl.h>
#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/basic_file_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_color_sinks-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

// What fmt's headers declare for char but define only here.
template FMT_API auto fmt::detail::thousands_sep_impl<char>(locale_ref)
    -> thousands_sep_result<char>;
template FMT_API auto fmt::detail::decimal_point_impl<char>(locale_ref) -> char;

// The sinks the project uses, with the mutexes it uses them with.
template class spdlog::sinks::base_sink<std::mutex>;
template class spdlog::sinks::base_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::basic_file_sink<std::mutex>;
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_mutex>;
