#pragma once
// Keeping a process that holds secrets out of reach of its own uid: no core
// dump, and no ptrace or /proc/PID/{mem,maps,environ,fd} for any process
// without CAP_SYS_PTRACE, the same uid included (a child of preloadrun, for
// instance). A program that execve()s is dumpable again: the setting is not
// inherited by what preloadrun runs.

namespace preloadrun {

// prctl(PR_SET_DUMPABLE, 0). Call it first thing in main(), before any
// secret is read. Throws Error(internal) if the kernel refuses.
void make_undumpable();

// prctl(PR_GET_DUMPABLE) != 0.
bool is_dumpable();

} // namespace preloadrun
