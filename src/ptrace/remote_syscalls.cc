#include "ptrace/remote_syscalls.hpp"

#include <cstring>

#include "base/fault.hpp"
#include "base/journal.hpp"

namespace minicriu {

RemoteSyscalls::RemoteSyscalls(Tracee& tracee, RemotePtr<> gadget) : thread_(tracee), site_(gadget) {}

RemoteSyscalls::RemoteSyscalls(Tracee& tracee, const TraceeMemory& memory, RemotePtr<> site,
                               size_t scratch)
    : thread_(tracee), memory_(&memory), site_(site), scratch_size_(scratch) {}

Status RemoteSyscalls::enter() {
  TRY(thread_.enter());
  if (memory_) {
    ASSIGN_OR_RETURN(saved_code_, memory_->read_array(site_.cast<uint8_t>(), kCodeSize + scratch_size_));
    uint8_t code[kCodeSize];
    std::memset(code, 0x90, sizeof(code));
    std::memcpy(code, arch::kSyscallInsn, sizeof(arch::kSyscallInsn));
    TRY(journal_note(fmt::format("code {} {:#x} {}", memory_->pid(), site_.addr(),
                                 hex_bytes(saved_code_.data(), saved_code_.size()))));
    // Set first: a write that fails halfway may still have changed bytes.
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
  if (!thread_.entered()) return fail("remote syscall outside an entered scope");
  TRY(fault_point("remote-syscall"));
  arch::Regs regs = thread_.saved_regs();
  arch::set_syscall(regs, site_, nr, {a1.value(), a2.value(), a3.value(), a4.value(), a5.value(), a6.value()});
  TRY(thread_.load(regs));
  TRY(with_context(thread_.thread().run_syscall(), fmt::format("remote syscall {}", nr)));
  ASSIGN_OR_RETURN(arch::Regs after, thread_.thread().get_regs());
  return arch::syscall_result(after);
}

Status RemoteSyscalls::leave() {
  Status code;
  if (code_written_) {
    code_written_ = false;
    code = memory_->write_array<uint8_t>(site_.cast<uint8_t>(), saved_code_);
    if (code) code = journal_note(fmt::format("code-back {} {:#x}", memory_->pid(), site_.addr()));
  }
  // Each step is independent of the others: all are tried.
  Status back = thread_.give_back();
  TRY(code);
  return back;
}

}  // namespace minicriu
