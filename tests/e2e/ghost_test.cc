// Ghost files at dump: carried within the size policy, sparse, once per inode,
// and refused in one line, target intact, when over the limit or a rule.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;


TEST(GhostDump, SharedPoolOfTwoProcessesIsCarriedOnceByDefault) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"shared"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 2);
  ASSERT_EQ(view.ghosts_size(), 1) << "one inode, one ghost";
  const auto& g = view.ghosts(0);
  EXPECT_EQ(g.path(), dir / "pool");
  EXPECT_EQ(g.size(), 64u << 20);
  EXPECT_EQ(g.allocated(), 64u << 20);
  EXPECT_EQ(std::filesystem::file_size(images + "/ghost-1.data"), 64u << 20);
  // The pool's data is in the ghost alone, not again as memory of either process.
  for (auto& proc : view.processes()) {
    EXPECT_LT(dumped_pages(proc) * 4096, 8u << 20) << "pid " << proc.pstree().pid();
    bool mapped = false;
    for (auto& v : proc.mm().vmas())
      if (v.file_id() && v.kind() == minicriu::img::VMA_FILE_SHARED) mapped = true;
    EXPECT_TRUE(mapped) << "the pool mapping does not point at the ghost";
  }
  expect_intact(p);
}

TEST(GhostDump, SparseGigabyteCarriesOnlyItsData) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"sparse"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.ghosts_size(), 1);
  EXPECT_EQ(view.ghosts(0).size(), 1ull << 30);
  EXPECT_LE(view.ghosts(0).allocated(), (1u << 20) + 8192);
  EXPECT_GE(view.ghosts(0).allocated(), (1u << 20) + 4);
  EXPECT_EQ(view.ghosts(0).extents_size(), 2);
  EXPECT_LE(std::filesystem::file_size(images + "/ghost-1.data"), (1u << 20) + 8192);
  expect_intact(p);
}

TEST(GhostDump, OverTheLimitIsRefusedInOneLineAndTheTreeRuns) {
  TempDir dir;
  Program p("ghost", dir, {"shared"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir.path(), "--ghost-limit", "1M"});
  EXPECT_EQ(r.status, 1);
  // The pool is held by fd 3 and a mapping: the fd is named.
  std::string expected = "minicriu: error: pid " + std::to_string(p.pid()) + ": fd 3: ghost file ";
  EXPECT_EQ(r.output.rfind(expected, 0), 0u) << r.output;
  EXPECT_EQ(r.output.find("pid", 20), std::string::npos) << "the pid is named twice: " << r.output;
  EXPECT_NE(r.output.find(": ghost file " + (dir / "pool") +
                          ": 64 MiB of data, over the ghost file limit of 1 MiB; raise it with "
                          "--ghost-limit SIZE or let this path through with --ghost-policy "
                          "'PATTERN:copy'\n"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "ghost-1.data"));
  EXPECT_FALSE(std::filesystem::exists(dir / "ghost-1.data.part"));
  expect_intact(p);
}

TEST(GhostDump, PolicyRulesWinOverTheLimit) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"shared"});
  ASSERT_TRUE(p.wait_ready());
  std::string pid = std::to_string(p.pid());
  auto refused = run_minicriu({"dump", "-t", pid, "-D", images, "--ghost-policy", dir.path() + "/*:fail"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.output.find("refused by --ghost-policy '" + dir.path() + "/*:fail'"), std::string::npos)
      << refused.output;
  ASSERT_TRUE(p.alive());
  auto allowed = run_minicriu({"dump", "-t", pid, "-D", images, "-R", "--ghost-limit", "4K",
                               "--ghost-policy", dir.path() + "/po*:copy"});
  EXPECT_EQ(allowed.status, 0) << allowed.output;
  auto bad = run_minicriu({"dump", "-t", pid, "-D", images, "--ghost-limit", "lots"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("--ghost-limit: size 'lots' does not start with a number"), std::string::npos)
      << bad.output;
  expect_intact(p);
}

TEST(GhostDump, UnlinkedNameWithASurvivingNameIsReopenedThroughIt) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"linked-same"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  EXPECT_EQ(view.ghosts_size(), 0) << "a file with a name is not a ghost";
  bool found = false;
  for (auto& f : view.files())
    if (f.has_reg() && f.reg().path() == dir / "second") {
      found = true;
      EXPECT_FALSE(f.reg().remove_after_restore());
      EXPECT_EQ(f.reg().pos(), 3u);
    }
  EXPECT_TRUE(found) << "the surviving name was not used";
  expect_intact(p);
}

TEST(GhostDump, SurvivingNameElsewhereGetsALinkRemapBesideTheOldName) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"linked-other"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  std::string remap;
  for (auto& f : view.files())
    if (f.has_reg() && f.reg().remove_after_restore()) remap = f.reg().path();
  ASSERT_FALSE(remap.empty());
  EXPECT_EQ(std::filesystem::path(remap).parent_path(), dir.path());
  EXPECT_TRUE(std::filesystem::exists(remap));
  expect_intact(p);
}

TEST(GhostDump, AFailedDumpRemovesTheLinkRemapItMade) {
  TempDir dir;
  Program p("ghost", dir, {"linked-other"});
  ASSERT_TRUE(p.wait_ready());
  // A disk too small fails the dump at its pages, after the fds made the link.
  TmpfsMount small(dir / "small", "size=64k");
  if (!small.ok()) GTEST_SKIP() << "cannot mount tmpfs here (needs root)";
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir / "small"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
  for (auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().rfind(".minicriu-link", 0), std::string::npos)
        << "left behind: " << e.path();
  expect_intact(p);
}

namespace {

// No name the restore made is left in dir once the restore is done.
void expect_no_restore_names(const std::string& dir) {
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    EXPECT_EQ(name.rfind(".minicriu-", 0), std::string::npos) << "left behind: " << e.path();
  }
}

}  // namespace

TEST(GhostRestore, SharedPoolOfTwoProcessesComesBackSharedAndUnlinked) {
  // Both processes check the other's half, cross writes after restore, that
  // the file has no name, its size and the fd's offset.
  TempDir dir;
  Program p("ghost", dir, {"shared"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  expect_no_restore_names(dir.path());
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "ghost.log");
}

TEST(GhostRestore, SparseGigabyteKeepsItsHoles) { cycle("ghost", 2, {"sparse"}, false); }

TEST(GhostRestore, LinkRemapIsRemovedOnceRestored) {
  TempDir dir;
  Program p("ghost", dir, {"linked-other"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  RestoredTree restored;
  restored.add_from(images);
  bool remap = false;
  for (auto& e : std::filesystem::directory_iterator(dir.path()))
    remap |= e.path().filename().string().rfind(".minicriu-link", 0) == 0;
  EXPECT_TRUE(remap) << "the dump made no link remap";
  ASSERT_EQ(restore_detached(images), pid);
  expect_no_restore_names(dir.path());
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "ghost.log");
}
