// x86_64 registers: the user_regs_struct, the syscall ABI, the call ABI our
// injected code is entered with, and how a syscall interrupted by a stop is
// restarted (arch/x86/kernel/signal.c).
#pragma once

#include <sys/user.h>

#include <array>
#include <cstdint>

#include "base/remote_ptr.hpp"

namespace minicriu::arch {

using Regs = user_regs_struct;

// Bytes of "syscall; int3".
inline constexpr uint8_t kSyscallInsn[] = {0x0f, 0x05, 0xcc};
inline constexpr unsigned kSyscallInsnLen = 2;

using SyscallArgs = std::array<long, 6>;

// Registers that run syscall nr with args at the `syscall` instruction at
// `at`, the rest of r left as it was.
inline void set_syscall(Regs& r, RemotePtr<> at, long nr, const SyscallArgs& args) {
  r.rax = static_cast<uint64_t>(nr);
  r.rdi = static_cast<uint64_t>(args[0]);
  r.rsi = static_cast<uint64_t>(args[1]);
  r.rdx = static_cast<uint64_t>(args[2]);
  r.r10 = static_cast<uint64_t>(args[3]);
  r.r8 = static_cast<uint64_t>(args[4]);
  r.r9 = static_cast<uint64_t>(args[5]);
  r.rip = at.addr();
  // -1: not in a syscall, so resuming applies no restart logic to our regs.
  r.orig_rax = static_cast<uint64_t>(-1);
}
// What the syscall returned, once the thread stopped after it.
inline long syscall_result(const Regs& r) { return static_cast<long>(r.rax); }

// Registers that enter the function at `entry` with its first argument, on a
// stack whose top is stack_top (aligned down to 16 bytes: the SysV ABI wants
// rsp % 16 == 0 at a call, and our entry stubs `call` the C++ code).
inline void set_call(Regs& r, RemotePtr<> entry, RemotePtr<> stack_top, uint64_t arg0) {
  r.rip = entry.addr();
  r.rsp = stack_top.addr() & ~uint64_t{15};
  r.rdi = arg0;
  r.orig_rax = static_cast<uint64_t>(-1);
}

inline RemotePtr<> instruction_pointer(const Regs& r) { return RemotePtr<>(r.rip); }

// The kernel's internal restart codes (include/linux/errno.h).
inline constexpr long kERestartSys = 512;
inline constexpr long kERestartNoIntr = 513;
inline constexpr long kERestartNoHand = 514;
inline constexpr long kERestartRestartBlock = 516;

enum class Restart { none, reissue, eintr };

// Registers that resume a thread seized inside a syscall the way the kernel
// would after a signal: re-issue the call (rax = nr, rip back over `syscall`),
// or, for calls whose restart state lives in the kernel (restart_block:
// nanosleep, poll with timeout, futex wait with timeout), return -EINTR.
//
// Known gap: the choice is made at dump time. The kernel makes it when the
// thread returns to user space, and returns -EINTR instead of restarting when
// a handler runs (-ERESTARTNOHAND, -ERESTARTSYS without SA_RESTART). A signal
// handled after the restore but before the thread re-enters the call therefore
// restarts it (pause() waits on). Emulating the kernel needs the original
// code kept in the image and the choice made under ptrace at restore.
Restart apply_syscall_restart(Regs& r);

}  // namespace minicriu::arch
