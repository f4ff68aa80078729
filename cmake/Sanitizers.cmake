# ASan+UBSan for the whole build when PRELOADRUN_SANITIZE is on.
if(PRELOADRUN_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
