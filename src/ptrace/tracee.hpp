// One seized thread. A Tracee is the ptrace attachment itself: while it lives
// the thread is ours and stopped (or running code we put there); when it goes,
// it is detached (or left dead, after a kill) by every path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "arch/x86_64/regs.hpp"
#include "base/error.hpp"
#include "base/remote_ptr.hpp"

namespace minicriu {

class Tracee {
 public:
  // PTRACE_SEIZE + PTRACE_INTERRUPT and wait for the stop. Signals that arrive
  // on the way are delivered (as the task would have) before it stops.
  // Seized with PTRACE_O_SUSPEND_SECCOMP where the kernel lets us (root with
  // CAP_SYS_ADMIN, not under seccomp ourselves): the thread's seccomp filters
  // (or strict mode) do not apply to the syscalls we make it run, so none of
  // them can kill it or fail them. seccomp_suspended() says whether they are.
  [[nodiscard]] static Result<Tracee> seize(pid_t pid, pid_t tid);

  Tracee(const Tracee&) = delete;
  Tracee& operator=(const Tracee&) = delete;
  Tracee(Tracee&& o) noexcept;
  Tracee& operator=(Tracee&&) = delete;
  ~Tracee();

  pid_t pid() const { return pid_; }
  pid_t tid() const { return tid_; }
  // The thread was in a group stop (SIGSTOP) when seized.
  bool group_stopped() const { return group_stopped_; }
  // SIGSTOPs this thread dequeued while seized, which we passed on (the
  // sender's stop is not lost); TaskTree tells its own from another's.
  unsigned stops_passed_on() const { return stops_passed_on_; }
  bool seccomp_suspended() const { return seccomp_suspended_; }
  // The options it was seized with, for PTRACE_SETOPTIONS calls that add
  // more (PTRACE_SETOPTIONS replaces them all).
  long options() const { return (seccomp_suspended_ ? PTRACE_O_SUSPEND_SECCOMP_ : 0) | PTRACE_O_TRACESYSGOOD_; }

  [[nodiscard]] Result<arch::Regs> get_regs() const;
  [[nodiscard]] Status set_regs(const arch::Regs& regs) const;
  // The whole NT_X86_XSTATE area, as large as this CPU makes it.
  [[nodiscard]] Result<std::vector<uint8_t>> get_xsave() const;
  [[nodiscard]] Status set_xsave(const std::vector<uint8_t>& xsave) const;
  [[nodiscard]] Result<uint64_t> get_sigmask() const;
  [[nodiscard]] Status set_sigmask(uint64_t mask) const;

  // Runs the thread until it stops with SIGTRAP (an int3 of ours). Signals
  // other than SIGTRAP that stop it meanwhile are an error: callers block all
  // signals first. The trap's signal-delivery-stop is turned into a
  // PTRACE_EVENT_STOP at once (park()), where a thread whose tracer dies
  // gets no SIGTRAP.
  [[nodiscard]] Status run_to_trap();
  // Runs the one syscall instruction at the thread's rip, from its entry stop
  // to its exit stop (PTRACE_SYSCALL), where it stays: no int3, no SIGTRAP.
  // A thread left in a syscall-exit-stop by a tracer that dies (SIGKILL)
  // returns to user space with no signal (PTRACE_O_TRACESYSGOOD makes the
  // stop's code an invalid signal number) and, with its process in a group
  // stop, stops again before its first instruction.
  [[nodiscard]] Status run_syscall();
  // Lets a thread stopped at its seize run until it stops again in the group
  // stop of the SIGSTOP queued for its process (callers block every other
  // signal first, so that it is the one dequeued).
  [[nodiscard]] Status join_group_stop();
  // Lets the thread run (parasite code); wait_trap() later collects the stop.
  [[nodiscard]] Status resume();
  // Non-blocking: true once the thread stopped at a trap; an error if it stopped
  // otherwise (a crash in our code) or died.
  [[nodiscard]] Result<bool> poll_trap();
  // Stops a thread we let run, so that it can be detached.
  void interrupt_and_wait();

  // Detach now, resuming the thread with the registers it has.
  void detach();
  // The thread was killed: there is nothing to detach.
  void forget() { attached_ = false; }

 private:
  Tracee(pid_t pid, pid_t tid) : pid_(pid), tid_(tid) {}
  [[nodiscard]] Status wait_seize_stop();
  [[nodiscard]] Result<bool> check_trap_status(int status);
  [[nodiscard]] Status park();
  [[nodiscard]] Status wait_stop(int& status);

  pid_t pid_ = 0;
  pid_t tid_ = 0;
  bool attached_ = false;
  bool running_ = false;
  bool group_stopped_ = false;
  bool seccomp_suspended_ = false;
  unsigned stops_passed_on_ = 0;
  static constexpr long PTRACE_O_SUSPEND_SECCOMP_ = 1l << 21;  // <linux/ptrace.h>
  static constexpr long PTRACE_O_TRACESYSGOOD_ = 1;            // PTRACE_O_TRACESYSGOOD
};

}  // namespace minicriu
