// What one new task does to become its dumped process, up to the jump into the
// restorer blob: session, fds, cwd, umask, personality, resource limits (planned
// here, applied by the blob), premapped memory with its pages, the blob's args.
// Runs in the task created by the tree builder (task_builder.hpp), never in the
// caller of the library.
#pragma once

#include "fs/file_kind.hpp"
#include "restorer/checkpoint.hpp"

namespace minicriu {

// Never returns: jumps into the blob, or reports the error on `channel` and
// exits the new task (which dies here, not the program that restores). ctx
// reaches what is shared by the files of the tree (recreated ghost files, the
// pipe and shared memory restorers), as this task's copy of the caller's.
[[noreturn]] void restore_process(const Checkpoint& c, const ProcessImages& p, int channel,
                                  FileRestoreContext ctx);

}  // namespace minicriu
