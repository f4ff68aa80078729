# The public headers (include/preloadrun/) include only public headers and
# system headers: never a part's private header ("wire/codec.hpp",
# "sim/world.hpp", "supervisor/...") and never generated protobuf code
# (*.pb.h), which would make every user of a public header depend on the
# part behind it. Run by ctest as style.public_headers:
#   cmake -DINCLUDE_DIR=include -DSOURCE_DIR=src -DGENERATED_DIR=build/generated
#         -P public_headers.cmake
foreach(var INCLUDE_DIR SOURCE_DIR GENERATED_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "public_headers.cmake: set ${var}")
  endif()
endforeach()

file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/*")
list(SORT headers)
set(bad "")
foreach(header IN LISTS headers)
  file(STRINGS "${INCLUDE_DIR}/${header}" lines REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "include[ \t]*([\"<])([^\">]*)[\">]")
      list(APPEND bad "${header}: ${line}: unreadable include")
      continue()
    endif()
    set(quoted "${CMAKE_MATCH_1}")
    set(path "${CMAKE_MATCH_2}")
    if(path MATCHES "\\.pb\\.h$")
      list(APPEND bad "${header}: ${line}: generated protobuf code")
    elseif(path MATCHES "^preloadrun/")
      if(NOT EXISTS "${INCLUDE_DIR}/${path}" AND NOT EXISTS "${GENERATED_DIR}/${path}")
        list(APPEND bad "${header}: ${line}: no such public header")
      endif()
    elseif(quoted STREQUAL "\"" OR EXISTS "${SOURCE_DIR}/${path}")
      list(APPEND bad "${header}: ${line}: a private header (under src/)")
    endif()
  endforeach()
endforeach()

list(LENGTH headers count)
if(bad)
  list(JOIN bad "\n  " text)
  message(FATAL_ERROR "public headers that include what is not public:\n  ${text}")
endif()
message(STATUS "${count} public headers include only public and system headers")
