// Memory details (tests/programs/memfdmore.c, madvise.c, mprot.c, filecow.c, cow.c):
// memfd mode, owner and seals added after writes with mappings of every
// kind, private memfd mappings, madvise/mlock/mseal per VMA, what mprotect
// allows on shared mappings, and private file pages a parent and child still
// share copy-on-write (and anonymous memory, cow.c). Each restored (twice where it can be) and checked by
// the program itself; the refusal of what is not carried is one line and
// leaves the target running. The plain and --leave-running modes are in
// modes_test.cc.
#include <elf.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "e2e_util.hpp"

using namespace e2e;

// Recreated memfds get new inodes: maps are not compared.
TEST(Memory, MemfdModeOwnerAndSealsAfterWritesWithSharedAndPrivateMappingsComeBackTwice) {
  cycle("memfdmore", 2, {}, false);
}

TEST(Memory, MadviseFlagsMlockAndMsealOfEachVmaComeBackTwice) { cycle("madvise", 2); }

// 300 MiB with a hole in the middle (bigmem.c): more than one thread reads
// it back (restorer/page_fill.hpp, on two CPUs or more), each part more than
// one batch of 64 MiB, into a slot UFFDIO_COPY fills.
TEST(Memory, ALargeProcessReadBackByThreadsComesBackTwice) { cycle("bigmem", 2, {"300"}); }

// A System V segment and a memfd come back as new inodes: maps differ there.
TEST(Memory, MprotectAllowsAndRefusesWhatItDidOnSharedMappingsTwice) { cycle("mprot", 2, {}, false); }

namespace {

// A parent and its child still sharing memory copy-on-write (program name):
// the parent's images hold at least parent_min bytes, the child's under
// child_max, and the child inherits from its parent some VMA that counts;
// restored, the child checks that its memory is still shared with its
// parent's and the root exits 0.
void cow_cycle(const char* name, uint64_t parent_min, uint64_t child_max, bool (*counts)(const minicriu::img::Vma&)) {
  TempDir dir;
  Program p(name, dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  RestoredTree restored;
  restored.add_from(images);
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 2);
  EXPECT_GE(dumped_pages(view.processes(0)) * 4096, parent_min);
  EXPECT_LT(dumped_pages(view.processes(1)) * 4096, child_max);
  int inherited = 0;
  for (auto& v : view.processes(1).mm().vmas()) inherited += v.inherited() && counts(v);
  EXPECT_GE(inherited, 1);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / (std::string(name) + ".log"));
}

}  // namespace

// The parent holds the 64 MiB; the child only what it changed since fork.
TEST(Memory, AnonymousMemorySharedCopyOnWriteIsStoredOnceAndSharedAgain) {
  cow_cycle("cow", 64u << 20, 4u << 20, [](const minicriu::img::Vma&) { return true; });
}

// The parent holds the 12 MiB it copied; the child only what it changed.
TEST(Memory, PrivateFilePagesSharedCopyOnWriteAreStoredOnceAndSharedAgain) {
  cow_cycle("filecow", 12u << 20, 2u << 20,
            [](const minicriu::img::Vma& v) { return v.kind() == minicriu::img::VMA_FILE_PRIVATE; });
}

// As the kernel's own core files, a core made from a checkpoint holds no data
// of MADV_DONTDUMP memory, and the data of the memory beside it.
TEST(Memory, CoredumpLeavesOutTheDataOfDontdumpMemory) {
  TempDir dir;
  Program p("madvise", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  uint64_t dontdump = 0, random = 0;
  for (auto& v : view.processes(0).mm().vmas()) {
    if (v.advice() == minicriu::img::ADVICE_DONTDUMP) dontdump = v.start();
    if (v.advice() == minicriu::img::ADVICE_RANDOM) random = v.start();
  }
  ASSERT_NE(dontdump, 0u);
  ASSERT_NE(random, 0u);
  std::string cores = images_dir(dir, "cores");
  auto r = run_minicriu({"coredump", "-D", images, "--output-dir", cores});
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream core(cores + "/core." + std::to_string(p.pid()), std::ios::binary);
  Elf64_Ehdr eh{};
  ASSERT_TRUE(core.read(reinterpret_cast<char*>(&eh), sizeof eh));
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  core.seekg(static_cast<std::streamoff>(eh.e_phoff));
  ASSERT_TRUE(core.read(reinterpret_cast<char*>(ph.data()), static_cast<std::streamsize>(ph.size() * sizeof ph[0])));
  bool saw_dontdump = false, saw_random = false;
  for (auto& h : ph) {
    if (h.p_type != PT_LOAD) continue;
    if (h.p_vaddr == dontdump) {
      saw_dontdump = true;
      EXPECT_EQ(h.p_filesz, 0u);
    }
    if (h.p_vaddr == random) {
      saw_random = true;
      EXPECT_EQ(h.p_filesz, h.p_memsz);
    }
  }
  EXPECT_TRUE(saw_dontdump && saw_random);
  expect_intact(p);
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
  // Protection keys need the CPU's (and the kernel's) PKU: not every x86_64 has it.
  if (read_text("/proc/cpuinfo").find(" ospke") == std::string::npos)
    GTEST_SKIP() << "no memory protection keys on this CPU (no ospke in /proc/cpuinfo)";
  TempDir dir;
  Program p("madvise", dir, {"pkey"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "pid " + std::to_string(p.pid()) + ": mapping ");
  EXPECT_NE(r.output.find("has memory protection key 1 (pkey_mprotect)"), std::string::npos) << r.output;
  expect_intact(p);
}
