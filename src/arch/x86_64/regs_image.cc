#include "arch/x86_64/regs_image.hpp"

namespace minicriu::arch {

namespace {

// Every field of user_regs_struct, each a field of the same name in X86Regs.
#define MC_X86_REGS(X)                                                                     \
  X(r15) X(r14) X(r13) X(r12) X(rbp) X(rbx) X(r11) X(r10) X(r9) X(r8) X(rax) X(rcx) X(rdx) \
  X(rsi) X(rdi) X(orig_rax) X(rip) X(cs) X(eflags) X(rsp) X(ss) X(fs_base) X(gs_base) X(ds) \
  X(es) X(fs) X(gs)

// A field added to user_regs_struct (a new kernel ABI) without a line above
// changes its size: caught here rather than as a register silently lost.
#define X(f) +sizeof(Regs::f)
static_assert(0 MC_X86_REGS(X) == sizeof(Regs), "MC_X86_REGS must name every register");
#undef X

}  // namespace

void regs_to_image(const Regs& r, img::X86Regs& out) {
#define X(f) out.set_##f(r.f);
  MC_X86_REGS(X)
#undef X
}

Regs regs_from_image(const img::X86Regs& in) {
  Regs r{};
#define X(f) r.f = in.f();
  MC_X86_REGS(X)
#undef X
  return r;
}

}  // namespace minicriu::arch
