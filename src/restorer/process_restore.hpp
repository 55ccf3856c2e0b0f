// What one new task does to become its dumped process, up to the jump into the
// restorer blob: session, fds, cwd, umask, personality, resource limits (planned
// here, applied by the blob), premapped memory with its pages, the blob's args.
// Runs in the task created by the tree builder (task_builder.hpp), never in the
// caller of the library.
#pragma once

#include "restorer/checkpoint.hpp"

namespace minicriu {

// Never returns: jumps into the blob, or reports the error on `channel` and
// exits the new task (which dies here, not the program that restores).
[[noreturn]] void restore_process(const Checkpoint& c, const ProcessImages& p, int channel);

}  // namespace minicriu
