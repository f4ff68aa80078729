# `format` rewrites the project's C++ sources with clang-format; `format-check`
# fails when one of them is not formatted (also run by the test suite).
find_program(CLANG_FORMAT NAMES clang-format clang-format-14)
if(CLANG_FORMAT)
  file(GLOB_RECURSE PRELOADRUN_FORMAT_FILES CONFIGURE_DEPENDS
    "${PROJECT_SOURCE_DIR}/include/*.hpp"
    "${PROJECT_SOURCE_DIR}/src/*.hpp" "${PROJECT_SOURCE_DIR}/src/*.cpp"
    "${PROJECT_SOURCE_DIR}/tests/*.hpp" "${PROJECT_SOURCE_DIR}/tests/*.cpp"
    "${PROJECT_SOURCE_DIR}/bench/*.cpp" "${PROJECT_SOURCE_DIR}/fuzz/*.cpp")
  add_custom_target(format COMMAND ${CLANG_FORMAT} -i ${PRELOADRUN_FORMAT_FILES}
    COMMENT "Formatting sources")
  add_custom_target(format-check
    COMMAND ${CLANG_FORMAT} --dry-run --Werror ${PRELOADRUN_FORMAT_FILES}
    COMMENT "Checking formatting")
endif()
