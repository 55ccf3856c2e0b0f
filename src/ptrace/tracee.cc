#include "ptrace/tracee.hpp"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <fstream>
#include <string>
#include <utility>

namespace minicriu {

namespace {

// Who traces a thread already, for a useful refusal.
std::string tracer_of(pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("TracerPid:", 0) == 0) return line.substr(10);
  return "?";
}

}  // namespace

Tracee::Tracee(Tracee&& o) noexcept
    : pid_(o.pid_), tid_(o.tid_), attached_(std::exchange(o.attached_, false)),
      running_(o.running_), group_stopped_(o.group_stopped_), seccomp_suspended_(o.seccomp_suspended_),
      stops_passed_on_(o.stops_passed_on_) {}

Tracee::~Tracee() { detach(); }

Result<Tracee> Tracee::seize(pid_t pid, pid_t tid) {
  // Without the privilege for it (EPERM), seized all the same: a thread that
  // has no seccomp state needs no suspension, and the dump refuses one that
  // has (proc/seccomp.cc) before it runs anything in it.
  bool suspended = ::ptrace(PTRACE_SEIZE, tid, nullptr,
                            reinterpret_cast<void*>(PTRACE_O_SUSPEND_SECCOMP_ | PTRACE_O_TRACESYSGOOD_)) == 0;
  if (!suspended && errno != EPERM && errno != EINVAL) return failf_errno("cannot seize thread {}", tid);
  if (!suspended && ::ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD_)) != 0) {
    int e = errno;
    if (e == EPERM) {
      std::string tracer = tracer_of(tid);
      while (!tracer.empty() && (tracer[0] == ' ' || tracer[0] == '\t')) tracer.erase(0, 1);
      if (tracer != "0" && tracer != "?")
        return std::unexpected(Error(fmt::format("thread {} is already traced by pid {} "
                                                 "(a debugger?); detach it and retry",
                                                 tid, tracer), e));
      return std::unexpected(Error(fmt::format("cannot seize thread {} (not permitted)", tid), e));
    }
    return std::unexpected(Error(fmt::format("cannot seize thread {}", tid), e));
  }
  Tracee t(pid, tid);
  t.attached_ = true;
  t.seccomp_suspended_ = suspended;
  if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0)
    return failf_errno("cannot interrupt thread {}", tid);
  TRY(t.wait_seize_stop());
  return t;
}

Status Tracee::wait_seize_stop() {
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid_, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failf_errno("waiting for thread {} to stop", tid_);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      attached_ = false;
      return std::unexpected(Error(fmt::format("thread {} exited while being seized", tid_), ESRCH));
    }
    if (!WIFSTOPPED(status)) continue;
    int sig = WSTOPSIG(status);
    if ((status >> 16) == PTRACE_EVENT_STOP) {
      // SIGTRAP: our interrupt. SIGSTOP and friends: a group stop.
      group_stopped_ = sig != SIGTRAP;
      return {};
    }
    // A signal-delivery-stop came first: deliver it, as the task would have got
    // it anyway; the pending interrupt stops it right after.
    if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0)
      return failf_errno("cannot pass signal {} to thread {}", sig, tid_);
  }
}

Result<arch::Regs> Tracee::get_regs() const {
  arch::Regs regs{};
  if (::ptrace(PTRACE_GETREGS, tid_, nullptr, &regs) != 0)
    return failf_errno("thread {}: PTRACE_GETREGS", tid_);
  return regs;
}

Status Tracee::set_regs(const arch::Regs& regs) const {
  if (::ptrace(PTRACE_SETREGS, tid_, nullptr, &regs) != 0)
    return failf_errno("thread {}: PTRACE_SETREGS", tid_);
  return {};
}

Result<std::vector<uint8_t>> Tracee::get_xsave() const {
  // Large enough for any xsave layout (AVX-512 needs about 2.7 KiB, AMX 11 KiB);
  // the kernel shrinks iov_len to what it wrote.
  std::vector<uint8_t> buf(64 << 10);
  iovec iov{buf.data(), buf.size()};
  if (::ptrace(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    return failf_errno("thread {}: PTRACE_GETREGSET NT_X86_XSTATE", tid_);
  buf.resize(iov.iov_len);
  return buf;
}

Status Tracee::set_xsave(const std::vector<uint8_t>& xsave) const {
  std::vector<uint8_t> copy = xsave;
  iovec iov{copy.data(), copy.size()};
  if (::ptrace(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    return failf_errno("thread {}: PTRACE_SETREGSET NT_X86_XSTATE", tid_);
  return {};
}

Result<uint64_t> Tracee::get_sigmask() const {
  uint64_t mask = 0;
  if (::ptrace(PTRACE_GETSIGMASK, tid_, reinterpret_cast<void*>(sizeof(mask)), &mask) != 0)
    return failf_errno("thread {}: PTRACE_GETSIGMASK", tid_);
  return mask;
}

Status Tracee::set_sigmask(uint64_t mask) const {
  if (::ptrace(PTRACE_SETSIGMASK, tid_, reinterpret_cast<void*>(sizeof(mask)), &mask) != 0)
    return failf_errno("thread {}: PTRACE_SETSIGMASK", tid_);
  return {};
}

Result<bool> Tracee::check_trap_status(int status) {
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    attached_ = false;
    running_ = false;
    return std::unexpected(Error(fmt::format("thread {} died while running injected code", tid_), ESRCH));
  }
  if (!WIFSTOPPED(status)) return false;
  running_ = false;
  int sig = WSTOPSIG(status);
  if ((status >> 16) == 0 && sig == SIGTRAP) {
    TRY(park());
    return true;
  }
  if ((status >> 16) == PTRACE_EVENT_STOP) {
    // A group stop while our code ran: go on. The kernel keeps the group stop
    // in effect (SIGNAL_STOP_STOPPED) and puts the thread back into it when
    // we detach (ptrace_unlink), so the process stops as its sender asked.
    TRY(resume());
    return false;
  }
  if (sig == SIGSTOP) {
    // With every other signal blocked by us, SIGSTOP is the one that can be
    // dequeued here. Swallowing it would lose the sender's stop: deliver it,
    // which starts the group stop handled above.
    if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0)
      return failf_errno("thread {}: cannot pass SIGSTOP on", tid_);
    stops_passed_on_++;
    running_ = true;
    return false;
  }
  return failf("thread {} stopped with signal {} ({}) in injected code at rip {:#x}", tid_, sig,
               strsignal(sig), get_regs() ? get_regs()->rip : 0);
}

Status Tracee::resume() {
  if (::ptrace(PTRACE_CONT, tid_, nullptr, nullptr) != 0)
    return failf_errno("thread {}: PTRACE_CONT", tid_);
  running_ = true;
  return {};
}

// A thread in the signal-delivery-stop of our int3's SIGTRAP would get that
// SIGTRAP, and die of it, if our process died now: the kernel delivers the
// stop's signal to a tracee whose tracer is gone. Suppressed instead, with an
// interrupt queued first: the thread goes from one stop to the next in the
// kernel (no instruction of its own runs), into a PTRACE_EVENT_STOP, which a
// dead tracer leaves harmless. (The window left is the few microseconds
// between the int3 and this call.)
Status Tracee::park() {
  if (::ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0)
    return failf_errno("thread {}: PTRACE_INTERRUPT after a trap", tid_);
  if (::ptrace(PTRACE_CONT, tid_, nullptr, nullptr) != 0)
    return failf_errno("thread {}: PTRACE_CONT after a trap", tid_);
  for (;;) {
    int status = 0;
    TRY(wait_stop(status));
    if ((status >> 16) == PTRACE_EVENT_STOP) return {};
    // Any other stop: a signal-delivery-stop of SIGSTOP (the only signal
    // it can dequeue, with every other blocked): delivered, as
    // check_trap_status() does; its group stop is the event stop we wait for.
    int sig = WSTOPSIG(status);
    if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig == SIGSTOP ? sig : 0))) != 0)
      return failf_errno("thread {}: PTRACE_CONT after a trap", tid_);
    if (sig == SIGSTOP) stops_passed_on_++;
  }
}

Status Tracee::wait_stop(int& status) {
  for (;;) {
    pid_t r = ::waitpid(tid_, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failf_errno("waiting for thread {}", tid_);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      attached_ = false;
      running_ = false;
      return std::unexpected(Error(fmt::format("thread {} died while running injected code", tid_), ESRCH));
    }
    if (WIFSTOPPED(status)) return {};
  }
}

Status Tracee::join_group_stop() {
  long sig = 0;
  for (int i = 0; i < 64; i++) {
    if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(sig)) != 0)
      return failf_errno("thread {}: PTRACE_CONT into the group stop", tid_);
    sig = 0;
    int status = 0;
    TRY(wait_stop(status));
    int stop = WSTOPSIG(status);
    if ((status >> 16) == PTRACE_EVENT_STOP) {
      if (stop != SIGTRAP) return {};  // the group stop
      continue;
    }
    if ((status >> 16) == 0 && stop == SIGSTOP) {
      sig = SIGSTOP;  // delivered: starts the group stop
      stops_passed_on_++;
      continue;
    }
    return failf("thread {} stopped with signal {} ({}) instead of entering its group stop", tid_, stop,
                 strsignal(stop));
  }
  return failf("thread {} does not enter its group stop", tid_);
}

Status Tracee::run_syscall() {
  long sig = 0;
  bool entered = false;
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, tid_, nullptr, reinterpret_cast<void*>(sig)) != 0)
      return failf_errno("thread {}: PTRACE_SYSCALL", tid_);
    running_ = true;
    sig = 0;
    int status = 0;
    TRY(wait_stop(status));
    running_ = false;
    int stop = WSTOPSIG(status);
    if (stop == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid_, reinterpret_cast<void*>(sizeof(info)), &info) <= 0)
        return failf_errno("thread {}: PTRACE_GET_SYSCALL_INFO", tid_);
      if (info.op == PTRACE_SYSCALL_INFO_ENTRY) entered = true;
      else if (info.op == PTRACE_SYSCALL_INFO_EXIT && entered) return {};
      continue;
    }
    if ((status >> 16) == PTRACE_EVENT_STOP) continue;  // a group stop: go on (as check_trap_status)
    if ((status >> 16) == 0 && stop == SIGSTOP) {
      sig = SIGSTOP;  // delivered: the sender's stop is not lost
      stops_passed_on_++;
      continue;
    }
    auto regs = get_regs();
    return failf("thread {} stopped with signal {} ({}) in a remote syscall at rip {:#x}", tid_, stop,
                 strsignal(stop), regs ? regs->rip : 0);
  }
}

Status Tracee::run_to_trap() {
  TRY(resume());
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid_, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failf_errno("waiting for thread {}", tid_);
    ASSIGN_OR_RETURN(bool trapped, check_trap_status(status));
    if (trapped) return {};
  }
}

Result<bool> Tracee::poll_trap() {
  int status = 0;
  pid_t r = ::waitpid(tid_, &status, __WALL | WNOHANG);
  if (r < 0) return failf_errno("waiting for thread {}", tid_);
  if (r == 0) return false;
  return check_trap_status(status);
}

void Tracee::interrupt_and_wait() {
  if (!attached_ || !running_) return;
  ::ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid_, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || WIFEXITED(status) || WIFSIGNALED(status)) {
      attached_ = false;
      break;
    }
    if (WIFSTOPPED(status) && (status >> 16) == 0 && WSTOPSIG(status) == SIGSTOP) {
      // Someone's SIGSTOP came first (the one signal it can dequeue with
      // every other blocked): passed on, not swallowed; our interrupt, still
      // pending, stops it right after.
      if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(SIGSTOP))) == 0) {
        stops_passed_on_++;
        continue;
      }
    }
    if (WIFSTOPPED(status)) break;
  }
  running_ = false;
}

void Tracee::detach() {
  if (!attached_) return;
  interrupt_and_wait();
  if (attached_) ::ptrace(PTRACE_DETACH, tid_, nullptr, nullptr);
  attached_ = false;
}

}  // namespace minicriu
