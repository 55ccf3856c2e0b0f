#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "arch/x86_64/regs.hpp"
#include "arch/x86_64/regs_image.hpp"

using namespace minicriu::arch;

namespace {
Regs in_syscall(long nr, long ret) {
  Regs r{};
  r.orig_rax = static_cast<uint64_t>(nr);
  r.rax = static_cast<uint64_t>(ret);
  r.rip = 0x1002;
  return r;
}
}  // namespace

TEST(SyscallRestart, RestartCodesReissueTheCall) {
  for (long code : {kERestartSys, kERestartNoIntr, kERestartNoHand}) {
    Regs r = in_syscall(0 /* read */, -code);
    EXPECT_EQ(apply_syscall_restart(r), Restart::reissue);
    EXPECT_EQ(r.rax, 0u);
    EXPECT_EQ(r.rip, 0x1000u);
  }
}

TEST(SyscallRestart, RestartBlockBecomesEintr) {
  Regs r = in_syscall(35 /* nanosleep */, -kERestartRestartBlock);
  EXPECT_EQ(apply_syscall_restart(r), Restart::eintr);
  EXPECT_EQ(static_cast<long>(r.rax), -EINTR);
  EXPECT_EQ(r.rip, 0x1002u);
}

TEST(SyscallRestart, CompletedOrUserModeIsLeftAlone) {
  Regs done = in_syscall(0, 42);
  EXPECT_EQ(apply_syscall_restart(done), Restart::none);
  EXPECT_EQ(done.rax, 42u);
  Regs user{};
  user.orig_rax = static_cast<uint64_t>(-1);
  user.rax = static_cast<uint64_t>(-kERestartSys);
  EXPECT_EQ(apply_syscall_restart(user), Restart::none);
  EXPECT_EQ(user.rip, 0u);
}

TEST(RegsImage, EveryRegisterGoesIntoTheImageAndComesBack) {
  Regs r{};
  auto* words = reinterpret_cast<unsigned long long*>(&r);
  for (size_t i = 0; i < sizeof(r) / sizeof(*words); i++) words[i] = 0x1111111111111111ull * (i + 1);
  minicriu::img::X86Regs image;
  regs_to_image(r, image);
  Regs back = regs_from_image(image);
  EXPECT_EQ(std::memcmp(&back, &r, sizeof(r)), 0);
  EXPECT_EQ(image.rip(), r.rip);
}

TEST(Regs, InjectedCodeIsEnteredAsTheAbisWant) {
  Regs r{};
  r.orig_rax = 1;  // stopped in write()
  set_syscall(r, minicriu::RemotePtr<>(0x5000), 9, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(r.rip, 0x5000u);
  EXPECT_EQ(r.rax, 9u);
  EXPECT_EQ(r.r10, 4u);  // the fourth syscall argument: not rcx as for calls
  EXPECT_EQ(static_cast<long>(r.orig_rax), -1);
  set_call(r, minicriu::RemotePtr<>(0x6000), minicriu::RemotePtr<>(0x7ff8), 42);
  EXPECT_EQ(r.rsp, 0x7ff0u);  // aligned down to 16
  EXPECT_EQ(r.rdi, 42u);
  EXPECT_EQ(r.rip, 0x6000u);
}
