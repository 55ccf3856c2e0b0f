// Memory details (tests/programs/memfdmore.c, madvise.c, mprot.c, filecow.c):
// memfd mode, owner and seals added after writes with mappings of every
// kind, private memfd mappings, madvise/mlock/mseal per VMA, what mprotect
// allows on shared mappings, and private file pages a parent and child still
// share copy-on-write. Each restored (twice where it can be) and checked by
// the program itself; the refusal of what is not carried is one line and
// leaves the target running. The plain and --leave-running modes are in
// modes_test.cc.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <string>

#include "e2e_util.hpp"

using namespace e2e;

// Recreated memfds get new inodes: maps are not compared.
TEST(Memory, MemfdModeOwnerAndSealsAfterWritesWithSharedAndPrivateMappingsComeBackTwice) {
  cycle("memfdmore", 2, {}, false);
}

TEST(Memory, MadviseFlagsMlockAndMsealOfEachVmaComeBackTwice) { cycle("madvise", 2); }

// A System V segment and a memfd come back as new inodes: maps differ there.
TEST(Memory, MprotectAllowsAndRefusesWhatItDidOnSharedMappingsTwice) { cycle("mprot", 2, {}, false); }

TEST(Memory, PrivateFilePagesSharedCopyOnWriteAreStoredOnceAndSharedAgain) {
  TempDir dir;
  Program p("filecow", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  RestoredTree restored;
  restored.add_from(images);
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 2);
  // The parent holds the 12 MiB it copied; the child only what it changed.
  EXPECT_GE(dumped_pages(view.processes(0)) * 4096, 12u << 20);
  EXPECT_LT(dumped_pages(view.processes(1)) * 4096, 2u << 20);
  bool inherited_file = false;
  for (auto& v : view.processes(1).mm().vmas())
    inherited_file |= v.inherited() && v.kind() == minicriu::img::VMA_FILE_PRIVATE;
  EXPECT_TRUE(inherited_file);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "filecow.log");
}

TEST(MemoryFails, DroppableMemoryIsRefusedInOneLineAndTheTargetRunsOn) {
  TempDir dir;
  Program p("madvise", dir, {"droppable"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "pid " + std::to_string(p.pid()) + ": mapping ");
  EXPECT_NE(r.output.find("droppable memory (MAP_DROPPABLE)"), std::string::npos) << r.output;
  expect_intact(p);
}

TEST(MemoryFails, AMemoryProtectionKeyIsRefusedInOneLineAndTheTargetRunsOn) {
  TempDir dir;
  Program p("madvise", dir, {"pkey"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "pid " + std::to_string(p.pid()) + ": mapping ");
  EXPECT_NE(r.output.find("has memory protection key 1 (pkey_mprotect)"), std::string::npos) << r.output;
  expect_intact(p);
}
