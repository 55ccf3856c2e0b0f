// The x86_64 rt_sigframe that rt_sigreturn consumes (arch/x86/include/asm/
// sigframe.h, uapi asm/sigcontext.h): how a restored thread gets back every
// register, its signal mask, its sigaltstack and its whole xsave area (AVX-512
// included) in one syscall, exactly as after a signal handler returns.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arch/x86_64/regs.hpp"
#include "base/error.hpp"

namespace minicriu::arch {

// The fx_sw_bytes a signal frame carries in the unused tail of the legacy FXSAVE
// area (offset 464, struct _fpx_sw_bytes); without FP_XSTATE_MAGIC1 there, and
// FP_XSTATE_MAGIC2 right after the xstate, rt_sigreturn silently restores only
// x87/SSE (check_xstate_in_sigframe in arch/x86/kernel/fpu/signal.c).
//
// PTRACE_GETREGSET NT_X86_XSTATE does not fill them: ptrace's layout puts the
// task's XCR0 in those bytes instead (USER_XSTATE_XCR0_WORD, asm/user.h). So the
// frame builder writes the fx_sw_bytes itself, from the area's size and XCR0.
inline constexpr uint32_t kFpXstateMagic1 = 0x46505853;
inline constexpr uint32_t kFpXstateMagic2 = 0x46505845;
inline constexpr size_t kFxSwBytesOffset = 464;
inline constexpr size_t kXsaveHeaderOffset = 512;
inline constexpr size_t kXsaveMinSize = 512 + 64;  // legacy area + xsave header

struct FxSwBytes {
  uint32_t magic1;
  uint32_t extended_size;  // xstate_size + sizeof(magic2)
  uint64_t xfeatures;
  uint32_t xstate_size;
  uint32_t padding[7];
};
static_assert(sizeof(FxSwBytes) == 48);

// Checks that an NT_X86_XSTATE area is one XRSTOR can take from a signal frame
// on a CPU with this XCR0: long enough, the XCR0 ptrace recorded in it is xcr0,
// and the xsave header is in the standard (not compacted) format.
[[nodiscard]] Status check_ptrace_xsave(std::span<const uint8_t> xsave, uint64_t xcr0);

struct SigframeInput {
  Regs regs;
  uint64_t sigmask = 0;
  uint64_t altstack_sp = 0;
  uint32_t altstack_flags = 0;
  uint64_t altstack_size = 0;
  std::span<const uint8_t> xsave;
};

struct Sigframe {
  std::vector<uint8_t> bytes;  // to be placed at the address given to build
  uint64_t sigreturn_sp = 0;   // rsp at the rt_sigreturn syscall
};

// Bytes one frame takes (a multiple of 64, so frames can sit back to back).
size_t rt_sigframe_size(size_t xsave_size);

// Builds the frame for placement at `at` (64-byte aligned: XRSTOR needs it).
[[nodiscard]] Result<Sigframe> build_rt_sigframe(const SigframeInput& in, uint64_t at);

}  // namespace minicriu::arch
