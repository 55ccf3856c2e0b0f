// File locks and leases, signal-driven I/O owners, shared fd tables and fs
// (tests/programs/locks.c, sigio.c, shared.c): each restored twice and
// checked by the program itself; each refusal is one line and leaves the
// tree running. The plain and --leave-running modes are in modes_test.cc.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "e2e_util.hpp"

using namespace e2e;

TEST(FileLocks, PosixOfdFlockLeasesAndBreakingLeasesComeBackTwice) { cycle("locks", 2); }

// CRIU recipes pass --file-locks to both commands; show names every lock.
TEST(FileLocks, CriuFileLocksFlagIsAcceptedAndShowNamesTheLocks) {
  TempDir dir;
  Program p("locks", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  auto dumped = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images, "--file-locks"});
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  auto view = show_json(images);
  for (auto& proc : view.processes()) ASSERT_TRUE(wait_gone(static_cast<pid_t>(proc.pstree().pid())));
  EXPECT_EQ(view.file_locks_size(), 11) << "2 POSIX of the root, 1 of the holder, 1 OFD, 3 flock, 4 leases";
  auto shown = run_minicriu({"show", "-D", images});
  for (const char* line : {"lock: POSIX write lock (bytes 10-19) on ", "lock: POSIX read lock (bytes 100-EOF) on ",
                           "lock: OFD write lock (bytes 0-9) on ", "lock: flock() exclusive lock on ",
                           "lock: write lease, being broken to read on ", "lock: read lease, being broken to unlock on ",
                           "lock: write lease, being broken to unlock on ", "lock: read lease on "})
    EXPECT_NE(shown.output.find(line), std::string::npos) << line << "\n" << shown.output;
  RestoredTree restored;
  restored.add_from(images);
  auto r = run_minicriu({"restore", "-d", "-D", images, "--file-locks"});
  ASSERT_EQ(r.status, 0) << r.output;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "locks.log");
}

TEST(FileLocks, APosixLockOnItsOwnExecutableIsRefused) {
  expect_dump_refused("locks", {"exe"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: fd 3: a POSIX read lock (bytes 0-EOF) on ", pid),
            fmt::format(", the executable of pid {}: the restore opens and closes that executable again", pid)};
  });
}

TEST(SignalDrivenIo, OwnersSignalsAndOAsyncComeBackTwice) { cycle("sigio", 2); }

TEST(SignalDrivenIo, AnOwnerOutsideTheTreeIsRefused) {
  pid_t self = ::getpid();
  expect_dump_refused("sigio", {"outside"}, [self](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("]): its signal-driven I/O owner (F_SETOWN) is process {} (", self),
            fmt::format("pid {}: fd 3 (pipe:[", pid), "outside the dumped tree"};
  });
}

TEST(SharedTables, FdTableAndFsSharedWithParentsComeBackTwice) { cycle("shared", 2); }

TEST(SharedTables, AThreadWithAnFdTableOfItsOwnIsRefused) {
  expect_dump_refused("shared", {"thread"}, [](pid_t pid) -> std::vector<std::string> {
    return {" has its own fd table (unshare(CLONE_FILES), or cloned without CLONE_FILES)",
            fmt::format("pid {}: thread ", pid)};
  });
}

TEST(SharedTables, SharingWithASiblingIsRefused) {
  expect_dump_refused("shared", {"sibling"}, [](pid_t) -> std::vector<std::string> {
    return {"shares its fd table (CLONE_FILES) with pid ", ", which is not its parent"};
  });
}

TEST(SharedTables, SharingWithAProcessOutsideTheTreeIsRefused) {
  expect_dump_refused("shared", {"outside"}, [](pid_t pid) -> std::vector<std::string> {
    return {", which is outside the dumped tree",
            fmt::format("pid {} shares its fd table (CLONE_FILES) with pid ", pid)};
  });
}
