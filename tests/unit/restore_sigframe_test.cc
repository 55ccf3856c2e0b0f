// The rt_sigframe restore builds for rt_sigreturn, checked against the layout
// the kernel reads (arch/x86/kernel/signal_64.c, fpu/signal.c).
#include <cstring>

#include "arch/x86_64/sigframe.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu::arch {
namespace {

constexpr uint64_t kXcr0 = 0xe7;

std::vector<uint8_t> xsave(size_t size) {
  std::vector<uint8_t> x(size);
  for (size_t i = 0; i < size; i++) x[i] = static_cast<uint8_t>(i * 7);
  std::memcpy(x.data() + 464, &kXcr0, 8);  // what ptrace puts there
  std::memset(x.data() + 520, 0, 8);       // xcomp_bv: standard format
  return x;
}

template <typename T>
T at(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(v));
  return v;
}

TEST(RestoreSigframe, CarriesRegistersMaskAndWholeXsave) {
  auto xs = xsave(2432);
  SigframeInput in;
  std::memset(&in.regs, 0, sizeof(in.regs));
  in.regs.rip = 0x401000;
  in.regs.rsp = 0x7ffe0000;
  in.regs.rax = 0x1234;
  in.regs.r15 = 0xf15;
  in.regs.cs = 0x33;
  in.regs.ss = 0x2b;
  in.regs.eflags = 0x246;
  in.sigmask = 0x800;
  in.altstack_sp = 0x9000;
  in.altstack_flags = 1 | 2;  // SS_ONSTACK | SS_DISABLE: ONSTACK must go
  in.altstack_size = 0x4000;
  in.xsave = xs;
  const uint64_t base = 0x7f0000001000;
  auto f = build_rt_sigframe(in, base);
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->bytes.size() % 64, 0u);
  EXPECT_EQ(f->bytes.size(), rt_sigframe_size(xs.size()));
  EXPECT_EQ(f->sigreturn_sp, base + 8);  // the kernel reads the frame at rsp - 8
  // ucontext at 8: uc_flags, uc_link, uc_stack (24), then sigcontext.
  EXPECT_EQ(at<uint64_t>(f->bytes, 8) & 1, 1u);               // UC_FP_XSTATE
  EXPECT_EQ(at<uint64_t>(f->bytes, 24), 0x9000u);             // ss_sp
  EXPECT_EQ(at<int32_t>(f->bytes, 32), 2);                    // ss_flags without SS_ONSTACK
  const size_t sc = 8 + 40;
  EXPECT_EQ(at<uint64_t>(f->bytes, sc + 7 * 8), 0xf15u);      // r15
  EXPECT_EQ(at<uint64_t>(f->bytes, sc + 13 * 8), 0x1234u);    // rax
  EXPECT_EQ(at<uint64_t>(f->bytes, sc + 15 * 8), 0x7ffe0000u);  // rsp
  EXPECT_EQ(at<uint64_t>(f->bytes, sc + 16 * 8), 0x401000u);  // rip
  EXPECT_EQ(at<uint16_t>(f->bytes, sc + 18 * 8), 0x33);       // cs
  uint64_t fpstate = at<uint64_t>(f->bytes, sc + 23 * 8);
  EXPECT_EQ(fpstate % 64, 0u);
  EXPECT_EQ(at<uint64_t>(f->bytes, 8 + 40 + 256), 0x800u);    // uc_sigmask
  size_t fp = fpstate - base;
  // The xsave area, whole, except the software bytes that make it an xstate frame.
  EXPECT_EQ(std::memcmp(f->bytes.data() + fp, xs.data(), 464), 0);
  EXPECT_EQ(std::memcmp(f->bytes.data() + fp + 512, xs.data() + 512, xs.size() - 512), 0);
  EXPECT_EQ(at<uint32_t>(f->bytes, fp + 464), kFpXstateMagic1);
  EXPECT_EQ(at<uint32_t>(f->bytes, fp + 468), xs.size() + 4);  // extended_size
  EXPECT_EQ(at<uint64_t>(f->bytes, fp + 472), kXcr0);          // xfeatures
  EXPECT_EQ(at<uint32_t>(f->bytes, fp + 480), xs.size());      // xstate_size
  EXPECT_EQ(at<uint32_t>(f->bytes, fp + xs.size()), kFpXstateMagic2);
  EXPECT_LE(fp + xs.size() + 4, f->bytes.size());
}

TEST(RestoreSigframe, RefusesAnUnalignedFrame) {
  auto xs = xsave(1024);
  SigframeInput in;
  in.xsave = xs;
  EXPECT_FALSE(build_rt_sigframe(in, 0x1008));
}

TEST(RestoreSigframe, ChecksThePtraceXsaveArea) {
  auto xs = xsave(2432);
  EXPECT_TRUE(check_ptrace_xsave(xs, kXcr0));
  EXPECT_FALSE(check_ptrace_xsave(xs, 0x7));
  auto compacted = xs;
  compacted[527] = 0x80;
  EXPECT_FALSE(check_ptrace_xsave(compacted, kXcr0));
  EXPECT_FALSE(check_ptrace_xsave(std::span(xs.data(), 512), kXcr0));
}

}  // namespace
}  // namespace minicriu::arch
