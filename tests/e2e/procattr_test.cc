// Process attributes and seccomp (tests/programs/seccomp.c, procattr.c,
// timer_tid.c): each restored twice and checked by the program itself; each
// refusal is one line and leaves the process running. The plain and
// --leave-running modes are in modes_test.cc.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "e2e_util.hpp"

using namespace e2e;

// Filters that kill the process on the parasite's syscalls: the dump runs
// them suspended; the filters come back per thread, in order, F1 shared.
TEST(Seccomp, FiltersPerThreadSharedByTsyncComeBackTwice) { cycle("seccomp", 2); }

TEST(Seccomp, StrictModeComesBackTwice) { cycle("seccomp", 2, {"strict"}); }

TEST(Seccomp, TheImagesHoldEachSharedFilterOnce) {
  TempDir dir;
  Program p("seccomp", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 1);
  const auto& core = view.processes(0).core();
  ASSERT_EQ(core.seccomp_filters_size(), 2) << "F1 once for three threads, F2 of T1";
  EXPECT_EQ(core.seccomp_filters(0).parent(), 0u);
  EXPECT_EQ(core.seccomp_filters(1).parent(), 1u);
  EXPECT_EQ(core.seccomp_filters(1).flags(), 2u) << "SECCOMP_FILTER_FLAG_LOG";
  int on_f1 = 0, on_f2 = 0;
  for (auto& t : core.threads()) {
    EXPECT_EQ(t.seccomp_mode(), 2u) << t.tid();
    on_f1 += t.seccomp_filter() == 1;
    on_f2 += t.seccomp_filter() == 2;
  }
  EXPECT_EQ(on_f1, 2);
  EXPECT_EQ(on_f2, 1);
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "seccomp.log");
}

TEST(Seccomp, AUserNotificationFilterIsRefused) {
  expect_dump_refused("seccomp", {"notify"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: thread {}: its seccomp filter 1 (of 1, oldest first) can answer "
                        "SECCOMP_RET_USER_NOTIF", pid, pid),
            "whose listener minicriu cannot make again"};
  });
}

TEST(ProcessAttrs, SchedulingPerThreadOomLoginuidMembarrierMlockallComeBackTwice) { cycle("procattr", 2); }

TEST(PosixTimers, TimersSignallingOneThreadComeBackTwice) { cycle("timer_tid", 2); }

TEST(Seccomp, FiltersOfAThreadThatDroppedCapSysAdminWithoutNoNewPrivsAreRefused) {
  expect_dump_refused("seccomp", {"dropped"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: thread {} has seccomp filters but neither no_new_privs nor CAP_SYS_ADMIN any more",
                        pid, pid),
            "set PR_SET_NO_NEW_PRIVS before installing the filters"};
  });
}

// A dumper that runs under seccomp itself may not suspend its targets'
// filters: a target under seccomp is refused before anything runs in it,
// and one without is dumped as ever.
TEST(Seccomp, ADumperUnderSeccompRefusesAThreadUnderSeccompAndLeavesItRunning) {
  TempDir dir;
  Program p("seccomp", dir, {"strict"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run({program("under_seccomp"), minicriu_bin(), "dump", "-t", std::to_string(p.pid()), "-D",
                images_dir(dir)});
  expect_one_line_error(r, fmt::format("pid {}: thread ", p.pid()));
  EXPECT_NE(r.output.find(" runs under strict mode (SECCOMP_SET_MODE_STRICT), and minicriu could not seize it "
                          "with PTRACE_O_SUSPEND_SECCOMP"), std::string::npos) << r.output;
  expect_intact(p);
  reap_zombies();
}

TEST(Seccomp, ADumperUnderSeccompStillDumpsAProcessWithout) {
  TempDir dir;
  Program p("threads", dir);
  ASSERT_TRUE(p.wait_ready());
  auto r = run({program("under_seccomp"), minicriu_bin(), "dump", "-t", std::to_string(p.pid()), "-D",
                images_dir(dir), "--leave-running"});
  EXPECT_EQ(r.status, 0) << r.output;
  expect_intact(p);
}

// A restore under seccomp would give its filters to every process it makes.
TEST(Seccomp, ARestoreUnderSeccompIsRefusedAndCreatesNothing) {
  TempDir dir;
  Program p("seccomp", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  auto r = run({program("under_seccomp"), minicriu_bin(), "restore", "-d", "-D", images});
  expect_one_line_error(r, "minicriu runs under seccomp (filters), and every process it restores would inherit it");
  EXPECT_FALSE(pid_exists(pid));
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "seccomp.log");
}

// KSM's merge-any flag (PR_SET_MEMORY_MERGE): set in the parent, cleared in
// its child, each as it was after a restore.
TEST(ProcessAttrs, KsmMergeAnyComesBackTwice) { cycle("ksm", 2); }

TEST(ProcessAttrs, KsmMergeAnyIsInTheImagesPerProcess) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ksm", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 2);
  for (auto& proc : view.processes())
    EXPECT_EQ(proc.core().attrs().memory_merge(), proc.pstree().pid() == static_cast<uint32_t>(p.pid()))
        << proc.pstree().pid();
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("KSM merges all its memory (PR_SET_MEMORY_MERGE)"), std::string::npos) << text.output;
  expect_intact(p);
}
