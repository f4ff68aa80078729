# Sanitizer builds: ASan+UBSan (PRELOADRUN_SANITIZE) or TSan (PRELOADRUN_TSAN).
if(PRELOADRUN_SANITIZE AND PRELOADRUN_TSAN)
  message(FATAL_ERROR "PRELOADRUN_SANITIZE and PRELOADRUN_TSAN cannot be combined")
endif()
if(PRELOADRUN_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(PRELOADRUN_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
