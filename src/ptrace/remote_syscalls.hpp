// A scope in which a stopped thread runs syscalls for us (as rr's
// AutoRemoteSyscalls). It blocks every signal, points the thread at a
// "syscall; int3" sequence and lets it run to the trap. Leaving the scope, by
// any path, puts back the registers, the signal mask and any code bytes it
// wrote.
#pragma once

#include <cstdint>
#include <vector>

#include "arch/x86_64/regs.hpp"
#include "base/error.hpp"
#include "base/remote_ptr.hpp"
#include "ptrace/tracee.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

// One argument of a remote syscall: a number, or an address in the target.
class SyscallArg {
 public:
  constexpr SyscallArg(long v) : v_(v) {}
  template <typename T>
  constexpr SyscallArg(RemotePtr<T> p) : v_(static_cast<long>(p.addr())) {}
  constexpr long value() const { return v_; }

 private:
  long v_;
};

class RemoteSyscalls {
 public:
  // Uses an existing "syscall; int3" at gadget (the parasite's): writes nothing.
  RemoteSyscalls(Tracee& tracee, RemotePtr<> gadget);
  // Writes "syscall; int3" plus `scratch` bytes of scratch memory at site, an
  // executable address of the target, and puts the old bytes back at the end.
  RemoteSyscalls(Tracee& tracee, const TraceeMemory& memory, RemotePtr<> site, size_t scratch);
  RemoteSyscalls(const RemoteSyscalls&) = delete;
  RemoteSyscalls& operator=(const RemoteSyscalls&) = delete;
  static void* operator new(size_t) = delete;
  ~RemoteSyscalls();

  // Must succeed before syscall(): saves the state it will put back.
  [[nodiscard]] Status enter();
  [[nodiscard]] Result<long> syscall(long nr, SyscallArg a1 = 0, SyscallArg a2 = 0, SyscallArg a3 = 0,
                                     SyscallArg a4 = 0, SyscallArg a5 = 0, SyscallArg a6 = 0);
  // Scratch memory right after the code written at site (only with that form).
  RemotePtr<> scratch() const { return site_.byte_offset(8); }
  [[nodiscard]] Status write_scratch(const void* data, size_t size) const;
  const arch::Regs& saved_regs() const { return saved_regs_; }

 private:
  Tracee& tracee_;
  const TraceeMemory* memory_ = nullptr;
  RemotePtr<> site_;
  size_t scratch_size_ = 0;
  std::vector<uint8_t> saved_code_;
  arch::Regs saved_regs_{};
  uint64_t saved_sigmask_ = 0;
  bool entered_ = false;
  bool code_written_ = false;
};

}  // namespace minicriu
