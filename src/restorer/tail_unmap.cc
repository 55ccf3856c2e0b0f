#include "restorer/tail_unmap.hpp"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

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
    // Syscall stops must be told from signal stops; seccomp stays suspended
    // (the blob installs the threads' filters after go, and the tail's
    // futex, munmap and rt_sigreturn must pass whatever they forbid).
    if (::ptrace(PTRACE_SETOPTIONS, tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD | t.options())) != 0)
      return failf_errno("PTRACE_SETOPTIONS of thread {}", tid);
    u->suspends_seccomp_ = u->suspends_seccomp_ && t.seccomp_suspended();
    u->threads_.push_back(std::move(t));
  }
  return u;
}

TailUnmapper::~TailUnmapper() = default;  // Tracee detaches each thread

// One thread on its way out of the blob: from syscall stop to syscall stop,
// up to the exit of its rt_sigreturn, where it stays stopped.
struct Leaving {
  pid_t tid;
  bool running = false;
  bool in_sigreturn = false;
  bool out = false;
  long sig = 0;     // a signal to pass on at the next resume
  int stops = 0;

  Status resume() {
    if (::ptrace(PTRACE_SYSCALL, tid, nullptr, reinterpret_cast<void*>(sig)) != 0)
      return failf_errno("PTRACE_SYSCALL of thread {}", tid);
    sig = 0;
    running = true;
    return {};
  }

  Status stopped(int status) {
    running = false;
    if (WIFEXITED(status) || WIFSIGNALED(status)) return failf("thread {} died while leaving the restorer", tid);
    if (++stops > 1000) return failf("thread {} does not reach rt_sigreturn", tid);
    if (WIFSTOPPED(status) && WSTOPSIG(status) == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid, reinterpret_cast<void*>(sizeof(info)), &info) <= 0)
        return failf_errno("PTRACE_GET_SYSCALL_INFO of thread {}", tid);
      if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
        in_sigreturn = info.entry.nr == SYS_rt_sigreturn;
      } else if (info.op == PTRACE_SYSCALL_INFO_EXIT && in_sigreturn) {
        out = true;  // it holds its dumped registers, still stopped
        return {};
      }
    } else if (WIFSTOPPED(status) && (status >> 16) == 0) {
      sig = WSTOPSIG(status);  // a signal-delivery-stop
    }
    return resume();
  }
};

// Every thread at once: the leader waits in the blob until the others have
// their seccomp state (they install it after go), so none may be held
// stopped while another runs.
Status TailUnmapper::run_all_to_sigreturn_exit() {
  std::vector<Leaving> threads;
  for (auto& t : threads_) threads.push_back(Leaving{t.tid()});
  Status st = run_all(threads);
  // On failure, the ones still running are stopped, so that they can be
  // detached (a thread left in PTRACE_SYSCALL would stop at its next syscall
  // for a tracer that is gone).
  for (auto& t : threads) {
    if (!t.running) continue;
    ::ptrace(PTRACE_INTERRUPT, t.tid, nullptr, nullptr);
    int status;
    while (::waitpid(t.tid, &status, __WALL) < 0 && errno == EINTR) {
    }
  }
  return st;
}

Status TailUnmapper::run_all(std::vector<Leaving>& threads) {
  for (auto& t : threads) TRY(t.resume());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (size_t left = threads.size(); left;) {
    bool any = false;
    for (auto& t : threads) {
      if (!t.running) continue;
      int status = 0;
      pid_t r = ::waitpid(t.tid, &status, __WALL | WNOHANG);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return failf_errno("waiting for thread {}", t.tid);
      if (r == 0) continue;
      any = true;
      TRY(t.stopped(status));
      if (t.out) left--;
    }
    if (any) continue;
    if (std::chrono::steady_clock::now() > deadline) return failf("threads do not leave the restorer");
    ::usleep(200);
  }
  return {};
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
  TRY(with_context(run_all_to_sigreturn_exit(), fmt::format("pid {}", pid_)));
  TRY(with_context(unmap_from(threads_.front()), fmt::format("pid {}", pid_)));
  threads_.clear();  // detach: every thread resumes in its own code
  return {};
}

}  // namespace minicriu
