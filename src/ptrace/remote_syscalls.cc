#include "ptrace/remote_syscalls.hpp"

#include <cstring>

namespace minicriu {

RemoteSyscalls::RemoteSyscalls(Tracee& tracee, RemotePtr<> gadget) : tracee_(tracee), site_(gadget) {}

RemoteSyscalls::RemoteSyscalls(Tracee& tracee, const TraceeMemory& memory, RemotePtr<> site,
                               size_t scratch)
    : tracee_(tracee), memory_(&memory), site_(site), scratch_size_(scratch) {}

Status RemoteSyscalls::enter() {
  ASSIGN_OR_RETURN(saved_regs_, tracee_.get_regs());
  ASSIGN_OR_RETURN(saved_sigmask_, tracee_.get_sigmask());
  // Block everything (SIGKILL and SIGSTOP cannot be): no handler of the target
  // may run on our registers.
  TRY(tracee_.set_sigmask(~0ull));
  entered_ = true;
  if (memory_) {
    saved_code_.resize(8 + scratch_size_);
    TRY(memory_->read_bytes(site_, saved_code_.data(), saved_code_.size()));
    uint8_t code[8];
    std::memset(code, 0x90, sizeof(code));
    std::memcpy(code, arch::kSyscallInsn, sizeof(arch::kSyscallInsn));
    code_written_ = true;
    TRY(memory_->write_bytes(site_, code, sizeof(code)));
  }
  return {};
}

Status RemoteSyscalls::write_scratch(const void* data, size_t size) const {
  if (!memory_ || size > scratch_size_) return fail("remote scratch memory too small");
  return memory_->write_bytes(scratch(), data, size);
}

Result<long> RemoteSyscalls::syscall(long nr, SyscallArg a1, SyscallArg a2, SyscallArg a3, SyscallArg a4,
                                     SyscallArg a5, SyscallArg a6) {
  if (!entered_) return fail("remote syscall outside an entered scope");
  arch::Regs regs = saved_regs_;
  arch::set_syscall(regs, nr, a1.value(), a2.value(), a3.value(), a4.value(), a5.value(), a6.value());
  regs.rip = site_.addr();
  TRY(tracee_.set_regs(regs));
  TRY(with_context(tracee_.run_to_trap(), fmt::format("remote syscall {}", nr)));
  ASSIGN_OR_RETURN(arch::Regs after, tracee_.get_regs());
  return static_cast<long>(after.rax);
}

RemoteSyscalls::~RemoteSyscalls() {
  if (!entered_) return;
  // Best effort on every path: each step is independent of the others.
  if (code_written_) (void)memory_->write_bytes(site_, saved_code_.data(), saved_code_.size());
  (void)tracee_.set_regs(saved_regs_);
  (void)tracee_.set_sigmask(saved_sigmask_);
}

}  // namespace minicriu
