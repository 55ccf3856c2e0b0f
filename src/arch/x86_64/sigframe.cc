#include "arch/x86_64/sigframe.hpp"

#include <cstddef>
#include <cstring>

namespace minicriu::arch {

namespace {

// uapi asm/sigcontext.h, struct sigcontext (64-bit).
struct SigContext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
  uint16_t cs, gs, fs, ss;
  uint64_t err, trapno, oldmask, cr2;
  uint64_t fpstate;
  uint64_t reserved1[8];
};
static_assert(sizeof(SigContext) == 256);

struct KStack {  // the kernel's stack_t
  uint64_t ss_sp;
  int32_t ss_flags;
  int32_t pad;
  uint64_t ss_size;
};
static_assert(sizeof(KStack) == 24);

struct UContext {  // asm-generic/ucontext.h with the kernel's 64-bit sigset
  uint64_t uc_flags;
  uint64_t uc_link;
  KStack uc_stack;
  SigContext uc_mcontext;
  uint64_t uc_sigmask;
};
static_assert(sizeof(UContext) == 304);

struct RtSigframe {
  uint64_t pretcode;
  UContext uc;
  uint8_t info[128];
};
static_assert(sizeof(RtSigframe) == 440);
// rt_sigreturn finds the frame at rsp - 8: the handler's `ret` popped pretcode.
static_assert(offsetof(RtSigframe, uc) == 8);

constexpr uint64_t kUcFpXstate = 0x1;
constexpr uint64_t kUcSigcontextSs = 0x2;
constexpr uint64_t kUcStrictRestoreSs = 0x4;
constexpr uint32_t kSsOnstack = 1;

constexpr size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }
constexpr size_t kFpstateOffset = align_up(sizeof(RtSigframe), 64);

}  // namespace

Status check_ptrace_xsave(std::span<const uint8_t> xsave, uint64_t xcr0) {
  if (xsave.size() < kXsaveMinSize)
    return failf("xsave area of {} bytes is shorter than the {} an XRSTOR needs", xsave.size(),
                 kXsaveMinSize);
  uint64_t recorded, xcomp_bv;
  std::memcpy(&recorded, xsave.data() + kFxSwBytesOffset, sizeof(recorded));
  if (recorded != xcr0)
    return failf("xsave area was saved with XCR0 {:#x}, this CPU has {:#x}", recorded, xcr0);
  std::memcpy(&xcomp_bv, xsave.data() + kXsaveHeaderOffset + 8, sizeof(xcomp_bv));
  if (xcomp_bv != 0) return failf("xsave area is in the compacted format (xcomp_bv {:#x})", xcomp_bv);
  return {};
}

size_t rt_sigframe_size(size_t xsave_size) { return align_up(kFpstateOffset + xsave_size + 4, 64); }

Result<Sigframe> build_rt_sigframe(const SigframeInput& in, uint64_t at) {
  if (at % 64 != 0) return failf("sigframe address {:#x} is not 64-byte aligned", at);
  if (in.xsave.size() < kXsaveMinSize) return failf("xsave area of {} bytes", in.xsave.size());
  Sigframe out;
  out.bytes.assign(rt_sigframe_size(in.xsave.size()), 0);
  RtSigframe f{};
  const Regs& r = in.regs;
  SigContext& sc = f.uc.uc_mcontext;
  sc.r8 = r.r8; sc.r9 = r.r9; sc.r10 = r.r10; sc.r11 = r.r11;
  sc.r12 = r.r12; sc.r13 = r.r13; sc.r14 = r.r14; sc.r15 = r.r15;
  sc.rdi = r.rdi; sc.rsi = r.rsi; sc.rbp = r.rbp; sc.rbx = r.rbx;
  sc.rdx = r.rdx; sc.rax = r.rax; sc.rcx = r.rcx; sc.rsp = r.rsp;
  sc.rip = r.rip; sc.eflags = r.eflags;
  sc.cs = static_cast<uint16_t>(r.cs);
  sc.ss = static_cast<uint16_t>(r.ss);
  // fs/gs selectors and bases are not taken from the frame on 64-bit: the
  // restorer sets fs_base/gs_base with arch_prctl before rt_sigreturn.
  sc.fpstate = at + kFpstateOffset;
  f.uc.uc_flags = kUcFpXstate | kUcSigcontextSs | kUcStrictRestoreSs;
  f.uc.uc_sigmask = in.sigmask;
  // rt_sigreturn restores the sigaltstack from uc_stack (restore_altstack).
  // SS_ONSTACK only reports that the thread ran on it; sigaltstack() refuses it.
  f.uc.uc_stack.ss_sp = in.altstack_sp;
  f.uc.uc_stack.ss_flags = static_cast<int32_t>(in.altstack_flags & ~kSsOnstack);
  f.uc.uc_stack.ss_size = in.altstack_size;
  std::memcpy(out.bytes.data(), &f, sizeof(f));
  // The dumped NT_X86_XSTATE bytes are the standard layout XRSTOR from a signal
  // frame expects; only the software bytes differ (see the header).
  uint8_t* fp = out.bytes.data() + kFpstateOffset;
  std::memcpy(fp, in.xsave.data(), in.xsave.size());
  FxSwBytes sw{};
  sw.magic1 = kFpXstateMagic1;
  sw.extended_size = static_cast<uint32_t>(in.xsave.size() + sizeof(uint32_t));
  std::memcpy(&sw.xfeatures, in.xsave.data() + kFxSwBytesOffset, sizeof(sw.xfeatures));
  sw.xstate_size = static_cast<uint32_t>(in.xsave.size());
  std::memcpy(fp + kFxSwBytesOffset, &sw, sizeof(sw));
  uint32_t magic2 = kFpXstateMagic2;
  std::memcpy(fp + in.xsave.size(), &magic2, sizeof(magic2));
  out.sigreturn_sp = at + offsetof(RtSigframe, uc);
  return out;
}

}  // namespace minicriu::arch
