// x86_64 registers: the user_regs_struct, the syscall ABI, and how a syscall
// interrupted by a stop is restarted (arch/x86/kernel/signal.c).
#pragma once

#include <sys/user.h>

#include <cstdint>

namespace minicriu::arch {

using Regs = user_regs_struct;

// Bytes of "syscall; int3".
inline constexpr uint8_t kSyscallInsn[] = {0x0f, 0x05, 0xcc};
inline constexpr unsigned kSyscallInsnLen = 2;

inline void set_syscall(Regs& r, long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
  r.rax = static_cast<uint64_t>(nr);
  r.rdi = static_cast<uint64_t>(a1);
  r.rsi = static_cast<uint64_t>(a2);
  r.rdx = static_cast<uint64_t>(a3);
  r.r10 = static_cast<uint64_t>(a4);
  r.r8 = static_cast<uint64_t>(a5);
  r.r9 = static_cast<uint64_t>(a6);
  // -1: not in a syscall, so resuming applies no restart logic to our regs.
  r.orig_rax = static_cast<uint64_t>(-1);
}

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
