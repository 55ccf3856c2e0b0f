#include "ptrace/thread_core.hpp"

#include <signal.h>
#include <sys/ptrace.h>

#include "arch/x86_64/regs_image.hpp"
#include "base/syscalls.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

Result<std::vector<img::SigInfo>> peek_pending_signals(pid_t tid, bool shared) {
  std::vector<img::SigInfo> out;
  constexpr int kBatch = 32;
  siginfo_t buf[kBatch];
  for (uint64_t off = 0;; off += kBatch) {
    __ptrace_peeksiginfo_args args{off, shared ? static_cast<uint32_t>(PTRACE_PEEKSIGINFO_SHARED) : 0u, kBatch};
    long n = ::ptrace(PTRACE_PEEKSIGINFO, tid, &args, buf);
    if (n < 0) return failf_errno("thread {}: PTRACE_PEEKSIGINFO", tid);
    for (long i = 0; i < n; i++) {
      img::SigInfo s;
      s.set_raw(std::string(reinterpret_cast<const char*>(&buf[i]), sizeof(siginfo_t)));
      out.push_back(std::move(s));
    }
    if (n < kBatch) break;
  }
  return out;
}

Result<img::ThreadCore> dump_thread_core(const Tracee& t) {
  img::ThreadCore core;
  core.set_tid(static_cast<uint32_t>(t.tid()));
  ASSIGN_OR_RETURN(arch::Regs regs, t.get_regs());
  arch::Restart restart = arch::apply_syscall_restart(regs);
  core.set_restart(restart == arch::Restart::reissue ? img::RESTART_REISSUE
                   : restart == arch::Restart::eintr ? img::RESTART_EINTR
                                                     : img::RESTART_NONE);
  arch::regs_to_image(regs, *core.mutable_regs());
  ASSIGN_OR_RETURN(auto xsave, t.get_xsave());
  core.set_xsave(std::string(xsave.begin(), xsave.end()));
  ASSIGN_OR_RETURN(uint64_t mask, t.get_sigmask());
  core.set_blocked_signals(mask);

  void* head = nullptr;
  size_t len = 0;
  if (sys::get_robust_list(t.tid(), &head, &len) != 0)
    return failf_errno("thread {}: get_robust_list", t.tid());
  core.set_robust_list(reinterpret_cast<uint64_t>(head));
  core.set_robust_list_len(len);

  __ptrace_rseq_configuration rseq{};
  if (::ptrace(PTRACE_GET_RSEQ_CONFIGURATION, t.tid(),
               reinterpret_cast<void*>(sizeof(rseq)), &rseq) > 0 &&
      rseq.rseq_abi_pointer) {
    core.mutable_rseq()->set_addr(rseq.rseq_abi_pointer);
    core.mutable_rseq()->set_len(rseq.rseq_abi_size);
    core.mutable_rseq()->set_signature(rseq.signature);
  }
  auto comm = proc::read_file(proc::pid_path(t.pid(), fmt::format("task/{}/comm", t.tid())));
  if (comm) {
    std::string c = *comm;
    while (!c.empty() && c.back() == '\n') c.pop_back();
    core.set_comm(c);
  }
  ASSIGN_OR_RETURN(auto pending, peek_pending_signals(t.tid(), false));
  for (auto& s : pending) *core.add_pending() = std::move(s);
  return core;
}

}  // namespace minicriu
