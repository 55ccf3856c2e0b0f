// The cure: a dump, failed or not, leaves the target with exactly the fds and
// mappings it had (the listings of /proc/PID/fd, link targets included, and
// /proc/PID/maps compare equal) and its signal mask and pending signals, which
// the target (tests/programs/intact.c) proves by checking itself.
//
// Two ways a dump fails with the parasite partway in:
//  - the parasite cannot be mapped: the target lowered its own RLIMIT_AS;
//  - the parasite hangs: MINICRIU_FAULT=parasite-stall makes it stop answering
//    at its first command, in a blocking syscall, holding its socket (an fd
//    of the target that only the cure can close) and its mapping, and
//    MINICRIU_PARASITE_TIMEOUT_MS makes the dump give up on it quickly.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kTimeoutMs = 1000;


void expect_same_holdings(const Holdings& before, const Holdings& after) {
  EXPECT_EQ(after.fds, before.fds) << "the fd table changed";
  EXPECT_EQ(after.maps, before.maps) << "the mappings changed";
}

// The fds the target holds now and did not hold before.
std::map<int, std::string> added_fds(const Holdings& before, const Holdings& now) {
  std::map<int, std::string> added;
  for (auto& [fd, link] : now.fds)
    if (!before.fds.count(fd)) added[fd] = link;
  return added;
}

CommandResult dump_with_stalling_parasite(const Program& p, const std::string& images) {
  return run({"/usr/bin/env", "MINICRIU_FAULT=parasite-stall",
              "MINICRIU_PARASITE_TIMEOUT_MS=" + std::to_string(kTimeoutMs), minicriu_bin(), "dump", "-t",
              std::to_string(p.pid()), "-D", images, "--leave-running"});
}

// Waits (while the dump runs) until the hung parasite holds its socket in
// the target's fd table: the state only the cure can undo.
std::map<int, std::string> wait_for_parasite_fds(pid_t pid, const Holdings& before) {
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    auto added = added_fds(before, holdings_of(pid));
    // The socket (before it, the infection may hold other fds a moment).
    if (added.size() == 1 && added.begin()->second.starts_with("socket:[")) return added;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return {};
}

char state_of(pid_t pid) {
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

}  // namespace

TEST(Cure, ProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(Cure, ProgramVerifiesItselfWithItsAddressSpaceLimitLowered) {
  TempDir dir;
  Program p("intact", dir, {"rlimit-as"});
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(Cure, LeaveRunningDumpLeavesFdsAndMappingsAsTheyWere) {
  TempDir dir;
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images_dir(dir)));
  expect_same_holdings(before, holdings_of(p.pid()));
  expect_intact(p);
}

TEST(Cure, IsIntactAfterDumpAndRestore) { cycle("intact", 2); }

TEST(Cure, ParasiteThatCannotBeMappedLeavesTheTargetAsItWas) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir, {"rlimit-as"});
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  // Its memfd is in the target's fd table by then: the cure must close it.
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images}),
                        "pid " + std::to_string(p.pid()) + ": cannot map the parasite");
  expect_same_holdings(before, holdings_of(p.pid()));
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  // Again, as a runtime retrying would: nothing piles up.
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"}),
                        "RLIMIT_AS");
  expect_same_holdings(before, holdings_of(p.pid()));
  expect_intact(p);
}

TEST(Cure, StalledParasiteIsStoppedAndEverythingItMadeIsTakenAway) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  auto t0 = Clock::now();
  auto dump = std::async(std::launch::async, [&] { return dump_with_stalling_parasite(p, images); });
  auto held = wait_for_parasite_fds(p.pid(), before);
  auto r = dump.get();
  auto took = Clock::now() - t0;
  // While it hung, the parasite held a socket of its own.
  ASSERT_EQ(held.size(), 1u) << r.output;
  EXPECT_TRUE(held.begin()->second.starts_with("socket:[")) << held.begin()->second;
  expect_one_line_error(r, "the parasite did not answer within " + std::to_string(kTimeoutMs) + " ms");
  // Given up on after the timeout, not after a wait of its own for a parasite
  // that cannot answer.
  EXPECT_LT(took, std::chrono::milliseconds(kTimeoutMs) + std::chrono::seconds(4));
  expect_same_holdings(before, holdings_of(p.pid()));
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  expect_intact(p);
}

TEST(Cure, SigstopToAStalledParasiteStopsTheTargetOnceCured) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  auto dump = std::async(std::launch::async, [&] { return dump_with_stalling_parasite(p, images); });
  auto held = wait_for_parasite_fds(p.pid(), before);
  // SIGSTOP is the one signal that reaches the parasite's thread (with every
  // other one blocked): the sender wants the target stopped, the dump must
  // neither swallow that nor be thrown off by it.
  if (!held.empty()) ::kill(p.pid(), SIGSTOP);
  auto r = dump.get();
  ASSERT_EQ(held.size(), 1u) << r.output;
  expect_one_line_error(r, "the parasite did not answer within");
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (state_of(p.pid()) != 'T' && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(state_of(p.pid()), 'T') << "the target is not stopped as SIGSTOP asked";
  expect_same_holdings(before, holdings_of(p.pid()));
  ::kill(p.pid(), SIGCONT);
  expect_intact(p);
}
