// A scope in which a stopped thread runs syscalls for us (as rr's
// AutoRemoteSyscalls): a BorrowedThread pointed at a "syscall; int3" sequence
// and run to the trap, once per call. Leaving the scope, by any path, puts back
// any code bytes it wrote, then the registers and the signal mask.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "arch/x86_64/regs.hpp"
#include "base/error.hpp"
#include "base/remote_ptr.hpp"
#include "ptrace/borrowed_thread.hpp"
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
  ~RemoteSyscalls() { (void)leave(); }

  // Must succeed before syscall(): saves the state it will put back.
  [[nodiscard]] Status enter();
  // The kernel's return value: a negative errno is a value, not an error; an
  // error means the thread could not be run to the trap.
  [[nodiscard]] Result<long> syscall(long nr, SyscallArg a1 = 0, SyscallArg a2 = 0, SyscallArg a3 = 0,
                                     SyscallArg a4 = 0, SyscallArg a5 = 0, SyscallArg a6 = 0);
  // Scratch memory right after the code written at site (only with that form).
  RemotePtr<> scratch() const { return site_.byte_offset(kCodeSize); }
  [[nodiscard]] Status write_scratch(const void* data, size_t size) const;

  // Puts code bytes, registers and signal mask back now: the first failure,
  // after trying all of them. Does nothing a second time.
  [[nodiscard]] Status leave();

 private:
  static constexpr size_t kCodeSize = 8;  // "syscall; int3", padded with nops

  BorrowedThread thread_;
  const TraceeMemory* memory_ = nullptr;
  RemotePtr<> site_;
  size_t scratch_size_ = 0;
  std::vector<uint8_t> saved_code_;
  bool code_written_ = false;
};

}  // namespace minicriu
