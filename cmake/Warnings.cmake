# Compiler warnings for the project's own targets: call preloadrun_warnings(target).
function(preloadrun_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wformat=2 -Wimplicit-fallthrough)
  # Not -Wnull-dereference: GCC 12 reports false positives at -O2 inside
  # std::vector and Boost.Asio, which would fail warnings-as-errors builds.
  if(PRELOADRUN_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
