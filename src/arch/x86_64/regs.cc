#include "arch/x86_64/regs.hpp"

#include <cerrno>

namespace minicriu::arch {

Restart apply_syscall_restart(Regs& r) {
  if (static_cast<long>(r.orig_rax) < 0) return Restart::none;
  switch (-static_cast<long>(r.rax)) {
    case kERestartSys:
    case kERestartNoIntr:
    case kERestartNoHand:
      r.rax = r.orig_rax;
      r.rip -= kSyscallInsnLen;
      return Restart::reissue;
    case kERestartRestartBlock:
      r.rax = static_cast<uint64_t>(-EINTR);
      return Restart::eintr;
    default:
      return Restart::none;
  }
}

}  // namespace minicriu::arch
