# Linking of every program and library: full RELRO and immediate binding
# (-z relro -z now). Besides a read-only GOT, immediate binding means no lazy
# PLT resolution at run time, whose trampoline saves every vector register on
# the calling thread's stack: a passphrase that a copy left in a register
# would be written there, in memory that outlives the thread (its stack is
# cached for the next one) and that no wipe of ours reaches.
add_link_options(LINKER:-z,relro LINKER:-z,now)

# Each function and datum in a section of its own, so that a program linked
# with --gc-sections (preloadrun: its start-up and peak RSS are performance
# targets) leaves out what it never calls. Not in sanitizer builds.
if(NOT PRELOADRUN_SANITIZE AND NOT PRELOADRUN_TSAN)
  add_compile_options(-ffunction-sections -fdata-sections)
endif()
