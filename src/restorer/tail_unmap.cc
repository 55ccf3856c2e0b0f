#include "restorer/tail_unmap.hpp"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "ptrace/borrowed_thread.hpp"
#include "ptrace/tracee.hpp"

namespace minicriu {

namespace {

struct SyscallStop {
  bool entry;
  long nr;
  long ret;
};

// Resumes t up to its next syscall stop. Signals are all blocked in the blob,
// so any other stop is unexpected; it is passed on (a signal) and waited past.
Result<SyscallStop> next_syscall_stop(pid_t tid) {
  long sig = 0;
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, tid, nullptr, reinterpret_cast<void*>(sig)) != 0)
      return failf_errno("PTRACE_SYSCALL of thread {}", tid);
    sig = 0;
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(tid, &status, __WALL)) < 0 && errno == EINTR) {
    }
    if (r < 0) return failf_errno("waiting for thread {}", tid);
    if (WIFEXITED(status) || WIFSIGNALED(status))
      return failf("thread {} died while leaving the restorer", tid);
    if (!WIFSTOPPED(status)) continue;
    if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid, reinterpret_cast<void*>(sizeof(info)), &info) <= 0)
        return failf_errno("PTRACE_GET_SYSCALL_INFO of thread {}", tid);
      if (info.op == PTRACE_SYSCALL_INFO_ENTRY)
        return SyscallStop{true, static_cast<long>(info.entry.nr), 0};
      if (info.op == PTRACE_SYSCALL_INFO_EXIT)
        return SyscallStop{false, -1, static_cast<long>(info.exit.rval)};
      continue;
    }
    if ((status >> 16) == 0) sig = WSTOPSIG(status);  // a signal-delivery-stop
  }
}

}  // namespace

Result<std::unique_ptr<TailUnmapper>> TailUnmapper::attach(pid_t pid, const std::vector<pid_t>& tids,
                                                           const rst::Msg& ready) {
  std::unique_ptr<TailUnmapper> u(new TailUnmapper());
  u->pid_ = pid;
  u->tail_ = RemotePtr<>(ready.tail);
  u->tail_size_ = ready.tail_size;
  u->tail_syscall_ = RemotePtr<>(ready.tail_syscall);
  if (u->tail_.null() || !u->tail_size_ || u->tail_syscall_ < u->tail_ ||
      u->tail_syscall_ >= u->tail_.byte_offset(static_cast<int64_t>(u->tail_size_)))
    return failf("pid {}: the restorer reported no usable tail", pid);
  for (pid_t tid : tids) {
    ASSIGN_OR_RETURN(Tracee t, Tracee::seize(pid, tid));
    // Syscall stops must be told from signal stops.
    if (::ptrace(PTRACE_SETOPTIONS, tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD)) != 0)
      return failf_errno("PTRACE_SETOPTIONS of thread {}", tid);
    u->threads_.push_back(std::move(t));
  }
  return u;
}

TailUnmapper::~TailUnmapper() = default;  // Tracee detaches each thread

Status TailUnmapper::run_to_sigreturn_exit(Tracee& t) {
  bool in_sigreturn = false;
  for (int steps = 0; steps < 1000; steps++) {
    ASSIGN_OR_RETURN(SyscallStop s, next_syscall_stop(t.tid()));
    if (s.entry) {
      in_sigreturn = s.nr == SYS_rt_sigreturn;
    } else if (in_sigreturn) {
      return {};  // the thread holds its dumped registers, still stopped
    }
  }
  return failf("thread {} does not reach rt_sigreturn", t.tid());
}

Status TailUnmapper::unmap_from(Tracee& t) {
  // Back to the dumped state on every path (the thread is stopped at each
  // syscall stop below, and after a failed step).
  BorrowedThread thread(t);
  TRY(thread.enter());
  arch::Regs regs = thread.saved_regs();
  arch::set_syscall(regs, tail_syscall_, SYS_munmap,
                    {static_cast<long>(tail_.addr()), static_cast<long>(tail_size_)});
  TRY(thread.load(regs));
  // Entry, then exit: the exit stop catches the thread before it returns
  // into the page it just unmapped.
  ASSIGN_OR_RETURN(SyscallStop entry, next_syscall_stop(t.tid()));
  if (!entry.entry || entry.nr != SYS_munmap) return failf("thread {}: unexpected syscall stop", t.tid());
  ASSIGN_OR_RETURN(SyscallStop exit, next_syscall_stop(t.tid()));
  TRY(thread.give_back());
  if (exit.ret < 0)
    return std::unexpected(Error(fmt::format("munmap of the restorer tail at {}", tail_), static_cast<int>(-exit.ret)));
  return {};
}

Status TailUnmapper::finish() {
  // The leader first: it lets the others go once it has read go.
  for (auto& t : threads_) TRY(with_context(run_to_sigreturn_exit(t), fmt::format("pid {}", pid_)));
  TRY(with_context(unmap_from(threads_.front()), fmt::format("pid {}", pid_)));
  threads_.clear();  // detach: every thread resumes in its own code
  return {};
}

}  // namespace minicriu
