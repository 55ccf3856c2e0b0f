// What one new task does to become its dumped process, up to the jump into the
// restorer blob: session, fds, cwd, umask, personality, resource limits (planned
// here, applied by the blob), premapped memory with its pages, the blob's args.
// Runs in the task created by the tree builder (task_builder.hpp), never in the
// caller of the library.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <string>

#include "fs/fd_table.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"
#include "restorer/premap.hpp"

namespace minicriu {

class SharingLink;

// What every task of one restore works from; each task has its own copy (a
// clone of its parent's memory), and inherits the fds behind it.
struct TreeRestore {
  const Checkpoint* checkpoint = nullptr;
  // The kinds, each holding what it created before the root (so the whole
  // tree shares it); each task works on its own copy.
  KindSet* kinds = nullptr;
  // Files held by several processes, opened once.
  const SharedFiles* shared = nullptr;
  std::map<pid_t, int> channels;  // each task's end of its channel to minicriu
  // Bytes of pages read back so far, over the whole tree: in memory the
  // tasks share with minicriu (MAP_SHARED), which reports the progress.
  std::atomic<uint64_t>* pages_restored = nullptr;
  // restore --page-server: each task reads its pages from there, on a
  // connection of its own (empty host: the page images).
  std::string page_server_host;
  uint16_t page_server_port = 0;
  // restore --lazy: the lazy pager's socket (lazy_pager.hpp), -1 for an
  // eager restore. Each task with lazy VMAs sends its userfaultfd on it.
  int lazy_socket = -1;
  // restore --lazy: the shared memory objects that come on first touch
  // (mem/lazy_shmem.hpp); their mappings are lazy VMAs too.
  const LazyShmemPlan* lazy_shmem = nullptr;
};

// The body of a task: takes its session and group, creates its children (each
// runs restore_task too), then becomes its dumped process. Never returns: it
// jumps into the blob, or reports the error on its channel and exits (the task
// dies here, never the program that restores).
// inherited: the slots of the parent's anonymous VMAs (by start address),
// which this task inherited mapped; empty for the root. parent_link: the talk
// with the parent whose fd table or fs this task shares (task_sharing.hpp),
// null if it shares neither.
[[noreturn]] void restore_task(const TreeRestore& tree, const ProcessImages& p,
                               const InheritedSlots& inherited = {}, SharingLink* parent_link = nullptr);

}  // namespace minicriu
