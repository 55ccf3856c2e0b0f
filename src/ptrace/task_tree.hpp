// The frozen tree: every process below a root, every thread of each, seized.
// Destroying the tree releases every thread (detach, resuming it), in reverse
// order of seizing, unless kill() took them first.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "ptrace/tracee.hpp"

namespace minicriu {

struct FrozenProcess {
  pid_t pid = 0;
  pid_t ppid = 0;              // 0 for the root of the tree
  bool zombie = false;         // dead, unreaped: nothing to seize
  int exit_status = 0;         // a zombie's wait status
  std::vector<Tracee> threads; // the leader first; empty for a zombie
  bool stopped_by_us = false;  // SIGSTOPped after the seize (SIGCONT at release)
  Tracee& leader() { return threads.front(); }
};

class TaskTree {
 public:
  // Seizes root and everything below it; on failure every thread already seized
  // is released before the error returns.
  [[nodiscard]] static Result<std::unique_ptr<TaskTree>> freeze(pid_t root, const Logger& log);

  TaskTree(const TaskTree&) = delete;
  TaskTree& operator=(const TaskTree&) = delete;
  ~TaskTree();

  std::vector<FrozenProcess>& processes() { return processes_; }
  pid_t root() const { return processes_.front().pid; }
  unsigned thread_count() const;

  // SIGKILL every process (after a complete dump), then forget the attachments.
  void kill();
  // Detach every thread now (also what the destructor does), then SIGCONT
  // the processes we stopped: a tree that was stopped stays stopped.
  void release();

 private:
  TaskTree() = default;
  [[nodiscard]] Status seize_threads(FrozenProcess& proc, const Logger& log);
  // Every process that was not stopped already is held in a group stop
  // (SIGSTOP) while seized: if we die (SIGKILL, OOM), the kernel detaches
  // its threads and they stay stopped instead of running on from our code,
  // until the guardian puts things back and continues them.
  [[nodiscard]] Status hold_in_group_stop(FrozenProcess& proc, const Logger& log);

  std::vector<FrozenProcess> processes_;  // parents before children
};

}  // namespace minicriu
