// Fd tables and fs state shared between processes (clone(2) CLONE_FILES,
// CLONE_FS). The kind (task_sharing.cc) finds them at dump with kcmp and
// records, for each process, what it shares with its parent
// (ProcessEntry.files_of_parent, fs_of_parent); sharing with any other
// process is refused. At restore the tree builder clones such a child with
// the same flags, and the parent and the child talk over a SharingLink so
// that neither pulls an fd (or the cwd) from under the other while both run
// minicriu code on the shared table:
//
//   child                                   parent (installs the table)
//   session, memory, its own children
//   inherited ------------------------>     (waits: nothing shared changes before)
//                                           the dumped fd table, cwd, umask,
//                                           restore_process
//   (files only, from here)  <-----------  installed
//   cwd, umask, restore_process
//   prepared (fds it still needs) ----->
//                                           closes the restore's own fds
//                           <-----------   closed
//   restore_process_last (POSIX locks)      restore_process_last
//
// A child that fails says so on the link, and its parent fails with its
// error; a parent that fails takes its children with it (PR_SET_PDEATHSIG).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "images/checkpoint.hpp"

namespace minicriu {

// The clone flags that make a child share what it shared with its parent
// (0: nothing).
uint64_t sharing_flags(const img::ProcessEntry& child);

// The fd numbers a restore keeps for itself start here, above every dumped fd
// of the tree (as restore's fd floor).
int restore_fd_floor(const Checkpoint& c);

enum class SharingStep : uint32_t { inherited = 1, installed, prepared, closed, failed };

class SharingLink {
 public:
  // In the parent, before the clone: a socket pair above floor.
  [[nodiscard]] static Result<SharingLink> make(pid_t child, uint64_t flags, int floor);
  SharingLink(SharingLink&&) = default;
  SharingLink& operator=(SharingLink&&) = default;

  bool files() const;  // the fd table is shared (else the fs only)
  pid_t child() const { return child_; }
  // Both ends: fds to keep while the link is still used.
  std::vector<int> fds() const { return {parent_end_.get(), child_end_.get()}; }

  // Parent side. The child's pidfd (clone3 CLONE_PIDFD): its death is an
  // error, not a wait forever.
  void set_child_pidfd(UniqueFd pidfd) { child_pidfd_ = std::move(pidfd); }
  [[nodiscard]] Status tell_child(SharingStep step);
  // The fds the child still needs (prepared), or its failure as an error.
  [[nodiscard]] Result<std::vector<int>> wait_child(SharingStep step);

  // Child side.
  [[nodiscard]] Status tell_parent(SharingStep step, const std::vector<int>& fds = {});
  void tell_parent_failed(const Error& e);
  [[nodiscard]] Status wait_parent(SharingStep step);
  // Once the last step came: the link's fds go (in a shared table, for both).
  void close();

 private:
  SharingLink(pid_t child, uint64_t flags, UniqueFd parent_end, UniqueFd child_end)
      : child_(child), flags_(flags), parent_end_(std::move(parent_end)), child_end_(std::move(child_end)) {}

  pid_t child_;
  uint64_t flags_;
  UniqueFd parent_end_, child_end_, child_pidfd_;
};

}  // namespace minicriu
