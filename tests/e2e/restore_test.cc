// Restore on real processes: a program builds its state, is dumped (and killed),
// restored with its PID and TIDs, and checks every piece of its state itself
// after SIGUSR1 (tests/programs/restore_*.c). Failed restores are one line and
// leave no process behind.
//
// Uses the e2e helpers of tests/e2e (e2e_util.hpp): this file builds once the
// restore branch has main's e2e driver merged in.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;

namespace {


// The restored process waits in its own code (not in the restorer) once its
// main thread is blocked in the syscall it was dumped in.
bool wait_in_syscall(pid_t pid, long nr, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string s = read_text("/proc/" + std::to_string(pid) + "/syscall");
    // "running", or the number of the syscall it is blocked in.
    if (!s.empty() && std::isdigit(static_cast<unsigned char>(s[0])) && std::stol(s) == nr) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Starts an executable that is not in the programs directory, as Program does.
pid_t start_exe(const std::string& exe, const TempDir& dir, const std::string& ready) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int log = ::open((dir / "exe.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::close_range(3, ~0u, 0);
    ::execl(exe.c_str(), exe.c_str(), ready.c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 2000 && ::access(ready.c_str(), F_OK) != 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return pid;
}


}  // namespace

TEST(Restore, SingleThreadKeepsMemoryFilesSignalsLimitsAndAvx512) { cycle("restore_single", 1); }

TEST(Restore, EightThreadsKeepTidsRegistersAndBlockingCalls) { cycle("restore_threads", 1); }

TEST(Restore, DumpRestoreDumpRestore) {
  cycle("restore_single", 2);
  cycle("restore_threads", 2);
}

TEST(Restore, WithoutDetachExitsWithTheRestoredStatus) {
  TempDir dir;
  Program p("restore_single", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir, "images");
  dump_and_reap(pid, images, &p);
  std::thread poke([pid] {
    if (wait_in_syscall(pid, 271 /* ppoll */)) ::kill(pid, SIGUSR1);
  });
  auto r = run_minicriu({"restore", "-D", images});
  poke.join();
  EXPECT_EQ(r.status, 0) << r.output << read_text(dir / "restore_single.log");
}

TEST(RestoreFails, PidInUseIsOneLineAndTheHolderIsUntouched) {
  TempDir dir;
  Program p("restore_single", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir, "images");
  ASSERT_EQ(run_minicriu({"dump", "--leave-running", "-t", std::to_string(p.pid()), "-D", images}).status, 0);
  expect_one_line_error(run_minicriu({"restore", "-D", images}),
                        "pid " + std::to_string(p.pid()) + " is in use by another process");
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(RestoreFails, DamagedImagesCreateNothing) {
  TempDir dir;
  Program p("restore_single", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir, "images");
  dump_and_reap(pid, images, &p);
  auto damaged = [&](const std::string& name, auto damage, const std::string& needle) {
    std::string copy = dir / name;
    std::filesystem::copy(images, copy);
    damage(copy);
    expect_one_line_error(run_minicriu({"restore", "-D", copy}), needle);
    EXPECT_TRUE(wait_gone(pid, 100)) << name << ": a process was left behind";
  };
  std::string p_s = std::to_string(pid);
  damaged("truncated_pages", [&](const std::string& d) {
    auto f = d + "/pages-" + p_s + ".img";
    std::filesystem::resize_file(f, std::filesystem::file_size(f) - 4096);
  }, "truncated or mismatched page image");
  damaged("truncated_core", [&](const std::string& d) {
    auto f = d + "/core-" + p_s + ".img";
    std::filesystem::resize_file(f, std::filesystem::file_size(f) - 10);
  }, "truncated or corrupt");
  damaged("no_inventory", [&](const std::string& d) {
    std::filesystem::remove(d + "/inventory.img");
  }, "is not a complete checkpoint");
  damaged("foreign_mm", [&](const std::string& d) {
    std::filesystem::copy_file("/etc/hostname", d + "/mm-" + p_s + ".img",
                               std::filesystem::copy_options::overwrite_existing);
  }, "mm-" + p_s + ".img");
  // The undamaged images still restore.
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "restore_single.log");
}

TEST(RestoreFails, FailureInsideTheRestorerKillsTheHalfRestoredProcess) {
  // PR_SET_MM_MAP refuses an exe_fd without execute permission: the restorer
  // blob fails after minicriu's memory is gone, and must still report it.
  TempDir dir;
  std::string exe = dir / "restore_threads";
  std::filesystem::copy_file(program("restore_threads"), exe);
  pid_t pid = start_exe(exe, dir, dir / "exe.ready");
  ASSERT_GT(pid, 0);
  std::string images = images_dir(dir, "images");
  dump_and_reap(pid, images, nullptr);
  std::filesystem::permissions(exe, std::filesystem::perms::owner_read);
  expect_one_line_error(run_minicriu({"restore", "-D", images}), "PR_SET_MM_MAP");
  EXPECT_TRUE(wait_gone(pid, 1000));
  std::filesystem::permissions(exe, std::filesystem::perms::owner_all);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "exe.log");
}

TEST(Restore, BasicProgramTwiceWithFilesDupsUnreadablePagesAndFileMappings) { cycle("basic", 2); }

TEST(Restore, EightThreadsInBlockingCallsOfTheDumpTests) { cycle("threads", 1); }

TEST(Restore, PosixTimersAndItimersKeepTicking) { cycle("timers", 1); }

TEST(Restore, PipesFifosMemfdsSharedMemoryAndGhostsOfOneProcess) {
  // Recreated objects get new inodes and the ghost a new name: maps differ there.
  cycle("kinds", 2, {}, false);
}

TEST(Restore, EventfdTimerfdSignalfdEpollAndInotifyOfOneProcess) {
  // Recreated anonymous inodes get new inode numbers: maps are not compared.
  cycle("anonfds", 2, {"no-child"}, false);
}

TEST(Restore, ThreeLevelTreeWithAZombieSessionsGroupsAndPrctlState) {
  // Every process checks its own memory, the root its zombie's status,
  // subreaper, pdeathsig and umask; the shared readiness page is one object.
  cycle("tree", 2, {"extras"}, false);
}

TEST(Restore, PipesWithDataInFlightAcrossTwoProcesses) { cycle("pipes", 2, {}, false); }

TEST(Restore, SharedAnonymousMemoryAndAMemfdOfTwoProcessesStayShared) { cycle("shm", 2, {}, false); }

TEST(Restore, AnonymousInodeFdsWithAPidfdIntoTheTree) { cycle("anonfds", 1, {}, false); }

TEST(Restore, CredentialsOfEveryThreadComeBack) {
  // Not root: ids all different, two groups, one capability, in two threads.
  cycle("creds", 2);
}

TEST(Restore, SystemVSharedMemoryKeyedAndRemovedStaysShared) { cycle("sysv", 2, {}, false); }

TEST(Restore, CopyOnWriteProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("cow", dir);
  ASSERT_TRUE(p.wait_ready());
  expect_intact(p);
}

TEST(Restore, CopyOnWriteProgramIntactAfterALeaveRunningDump) {
  TempDir dir;
  Program p("cow", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images_dir(dir)));
  expect_intact(p);
}

TEST(Restore, AHundredThreadsKeepCounting) { cycle("many_threads", 2); }

TEST(Restore, OPathFdsOnAFileADirectoryAndASymlinkItself) { cycle("opath", 2); }
