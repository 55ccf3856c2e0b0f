// Creating the tasks of a checkpoint with their dumped PIDs. This is the tree
// builder: it decides which task is created by whom and with which PID; what
// happens inside a new task (files, memory, the blob) is process_restore's.
//
// minicriu creates the root (create_task); every other process is created by
// its restored parent while that parent still runs minicriu code
// (create_child_task), after the parent took its session and group, so that
// children inherit them and setsid()/setpgid() stay legal.
#pragma once

#include <sys/types.h>

#include <functional>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "images/checkpoint.hpp"
#include "restorer/restore_channel.hpp"

namespace minicriu {

// A task being restored: SIGKILLed and reaped when it goes out of scope, unless
// released, so no half-restored process outlives a failed restore.
class RestoringTask {
 public:
  RestoringTask(pid_t pid, UniqueFd channel) : pid_(pid), channel_(std::move(channel)) {}
  RestoringTask(RestoringTask&& o) noexcept : pid_(std::exchange(o.pid_, 0)), channel_(std::move(o.channel_)) {}
  RestoringTask(const RestoringTask&) = delete;
  RestoringTask& operator=(const RestoringTask&) = delete;
  RestoringTask& operator=(RestoringTask&&) = delete;
  void* operator new(size_t) = delete;
  ~RestoringTask();

  pid_t pid() const { return pid_; }
  int channel() const { return channel_.get(); }
  void close_channel() { channel_.reset(); }
  // The task runs on its own now: it is no longer killed by this guard.
  pid_t release() { return std::exchange(pid_, 0); }

 private:
  pid_t pid_;
  UniqueFd channel_;
};

// The body runs in the new task and must not return: it jumps into the
// restorer blob or reports an error on `channel` and exits.
using TaskBody = std::function<void(int channel)>;

// A child of ours whose PID is the dumped one (clone3 with set_tid, from a
// forked helper with CLONE_PARENT: see task_builder.cc), running body, talking
// to us over `channel` (make_channel; the task uses the child end).
[[nodiscard]] Result<RestoringTask> create_task(const ProcessImages& p, ChannelPair channel,
                                                const TaskBody& body);

// Inside a task being restored (single-threaded): clone3 of one of its dumped
// children with its pid. A zombie child exits at once with its dumped status;
// any other runs body(), which must not return. A child that shared its
// parent's fd table or fs is cloned sharing them again (sharing_flags,
// task_sharing.hpp); pidfd, if given, receives a pidfd of the child above
// floor (CLONE_PIDFD).
[[nodiscard]] Status create_child_task(const ProcessImages& child, const std::function<void()>& body,
                                       UniqueFd* pidfd = nullptr, int floor = 0);

}  // namespace minicriu
