// The last trace of a restore: the restorer tail (its code and the threads'
// sigframes) cannot unmap itself, because the thread that unmapped it would
// return into nothing. So the parent does it, as CRIU does: it seizes every
// thread before saying go, runs each to the exit of its rt_sigreturn (the
// thread then holds exactly its dumped registers), has the leader run munmap
// of the tail from the tail's own `syscall` instruction, catches that syscall's
// exit before the thread returns into the unmapped page, puts the dumped
// registers and signal mask back, and detaches everything.
//
// A failure here costs only the cleanup: the tail stays mapped (a warning) and
// the restored process runs on unharmed.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/remote_ptr.hpp"
#include "restorer/restorer_args.hpp"

namespace minicriu {

class Tracee;
struct Leaving;

class TailUnmapper {
 public:
  // Seizes the threads (they wait in the blob for go). Before go.
  [[nodiscard]] static Result<std::unique_ptr<TailUnmapper>> attach(
      pid_t pid, const std::vector<pid_t>& tids, const rst::Msg& ready);
  ~TailUnmapper();

  // Every thread is traced with PTRACE_O_SUSPEND_SECCOMP: the seccomp state
  // the blob gives the threads after go cannot stop them leaving it.
  bool suspends_seccomp() const { return suspends_seccomp_; }

  // After go: runs every thread out of the blob and unmaps the tail.
  [[nodiscard]] Status finish();

 private:
  TailUnmapper() = default;
  [[nodiscard]] Status run_all_to_sigreturn_exit();
  [[nodiscard]] Status run_all(std::vector<Leaving>& threads);
  [[nodiscard]] Status unmap_from(Tracee& t);

  pid_t pid_ = 0;
  RemotePtr<> tail_;           // the tail mapping in the restored process
  uint64_t tail_size_ = 0;
  RemotePtr<> tail_syscall_;   // its `syscall` instruction
  std::vector<Tracee> threads_;
  bool suspends_seccomp_ = true;
};

}  // namespace minicriu
