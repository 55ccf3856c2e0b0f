// A background checkpoint (dump --leave-running --background): the tree is
// frozen only to take its state and write-protect its private anonymous
// memory, whose pages are copied while it runs; a write to a page not yet
// copied waits for its copy. The program (background_gens) rewrites its
// pages in a fixed order and keeps the step counter in the same memory, so
// the restored copy must agree exactly with the counter it restored: the
// checkpoint is of one moment, the freeze. The original, left running,
// checks itself too, and tells the longest pause it saw.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <regex>
#include <thread>

#include "e2e_util.hpp"
#include "minicriu/minicriu.h"

using namespace e2e;

namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// The longest gap the program's ticker saw, from its log line.
std::string longest_gap(const std::string& log) {
  std::smatch m;
  std::string last;
  std::regex re("longest gap ([0-9.]+) ms");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it)
    last = (*it)[1];
  return last;
}

// "background: ... N write fault(s), M on a page not yet copied": M.
long faults_copied(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("([0-9]+) write fault\\(s\\), ([0-9]+) on a page not yet copied")))
    return -1;
  return std::stol(m[2]);
}

// The original checks itself (every page agrees with its counter) and exits
// 0; then the images restore a copy of the moment of the freeze, which
// checks every page within its first pass and again at the end.
void original_then_restored(Program& p, const std::string& images, const TempDir& dir, int pass_ms) {
  pid_t pid = p.pid();
  sleep_ms(200);
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
  std::cout << "[ frozen  ] longest pause the application saw around the background dump: "
            << longest_gap(p.log()) << " ms\n";
  ASSERT_TRUE(wait_gone(pid));
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  sleep_ms(pass_ms);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "background_gens.log");
}

// minicriu with args under MINICRIU_FAULT=fault (a step held by a delay),
// the program sent sig after ms, while the dump waits there.
CommandResult run_signalling(const std::string& fault, const std::vector<std::string>& args, Program& p, int ms,
                             int sig) {
  CommandResult r;
  ::setenv("MINICRIU_FAULT", fault.c_str(), 1);
  std::thread dump([&] { r = run_minicriu(args); });
  sleep_ms(ms);
  p.signal(sig);
  dump.join();
  ::unsetenv("MINICRIU_FAULT");
  return r;
}

}  // namespace

TEST(Background, RestoredPagesAreExactlyThoseOfTheFreezeWhileTheProgramRewroteThem) {
  TempDir dir;
  // 64 MiB, 40000 page rewrites a second all over it: many writes reach a
  // page before the background copy does.
  Program p("background_gens", dir, {"16384", "40000"});
  ASSERT_TRUE(p.wait_ready());
  sleep_ms(200);
  p.signal(SIGUSR2);  // the longest gap counts from here
  sleep_ms(50);
  std::string images = images_dir(dir);
  auto r = run_minicriu({"-v", "dump", "-t", std::to_string(p.pid()), "-D", images, "-R", "--background"});
  ASSERT_EQ(r.status, 0) << r.output;
  std::cout << "[ dump    ] " << r.output.substr(r.output.rfind("dumped ")) << "\n";
  EXPECT_NE(r.output.find("write-protected, to be copied once it runs"), std::string::npos) << r.output;
  // Writes did wait for their page's copy (the copy raced the program).
  EXPECT_GT(faults_copied(r.output), 0) << r.output;
  // 16384 pages at 40000 a second: a pass takes 0.4 s.
  ASSERT_NO_FATAL_FAILURE(original_then_restored(p, images, dir, 700));
}

TEST(Background, ATreeOfThreeThroughTheCAbi) {
  TempDir dir;
  Program p("background_gens", dir, {"4096", "20000", "3"});
  ASSERT_TRUE(p.wait_ready());
  sleep_ms(150);
  std::string images = images_dir(dir);
  minicriu_dump_opts* o = minicriu_dump_opts_new();
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(minicriu_dump_opts_set_pid(o, p.pid()), 0);
  EXPECT_EQ(minicriu_dump_opts_set_images_dir(o, images.c_str()), 0);
  EXPECT_EQ(minicriu_dump_opts_set_leave_running(o, 1), 0);
  EXPECT_EQ(minicriu_dump_opts_set_background(o, 1), 0);
  int rc = minicriu_dump(o);
  minicriu_dump_opts_free(o);
  ASSERT_EQ(rc, 0) << minicriu_last_error();
  EXPECT_EQ(show_json(images).processes_size(), 3);
  ASSERT_NO_FATAL_FAILURE(original_then_restored(p, images, dir, 500));
}

// Not a background dump: a tree of three with 64 MiB each, the pages of
// each process copied by the workers while the next ones are dumped (their
// copies queued in one pool, mem/page_copy.hpp). The restored tree checks
// every page of each process against its counter.
TEST(PageCopyPool, ATreeOfThreeCopiedWhileTheNextProcessesAreDumpedComesBackExactly) {
  TempDir dir;
  Program p("background_gens", dir, {"16384", "20000", "3"});
  ASSERT_TRUE(p.wait_ready());
  sleep_ms(150);
  std::string images = images_dir(dir);
  auto r = run_minicriu({"-v", "dump", "-t", std::to_string(p.pid()), "-D", images, "-R"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("pages of 3 process(es) copied by"), std::string::npos) << r.output;
  EXPECT_EQ(show_json(images).processes_size(), 3);
  ASSERT_NO_FATAL_FAILURE(original_then_restored(p, images, dir, 900));
}

TEST(Background, RefusedInOneLineWithoutLeaveRunningTheTargetIntact) {
  TempDir dir;
  Program p("background_gens", dir, {"1024", "10000"});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--background"});
  expect_one_line_error(r, "--background needs --leave-running");
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

// A page the application discards after the freeze, before the background
// copy reached it, cannot be saved as it was: the dump fails in one line,
// leaves no checkpoint, and the program runs on unharmed.
TEST(Background, MemoryDiscardedBeforeItsCopyFailsTheDumpInOneLineTheTargetIntact) {
  TempDir dir;
  Program p("background_gens", dir, {"16384", "1000", "1", "churn"});
  ASSERT_TRUE(p.wait_ready());
  sleep_ms(100);
  std::string images = images_dir(dir);
  // The copy held 300 ms after the release (its step dump/copy): the churn
  // discards pages of the freeze before it reaches them, whatever the race.
  ::setenv("MINICRIU_FAULT", "dump/copy:1:delay=300", 1);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "-R", "--background"});
  ::unsetenv("MINICRIU_FAULT");
  expect_one_line_error(r, "after the freeze, before the background copy reached it");
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

// The same program, dumped in the background again and again with the copy
// not held: whichever wins each race (its discards or the copy), every dump
// either completes or fails in one line, none hangs, and the program runs on
// unharmed. (Discards while the copy runs once hung the application in the
// kernel, waiting on a remove event the dump's handler never read.) A dump
// that completes is not restored here: the churn keeps nothing a restored
// copy could be checked against (the tests above restore theirs).
TEST(Background, AProgramDiscardingAllTheTimeHangsNoDumpAndIsNotHarmed) {
  TempDir dir;
  Program p("background_gens", dir, {"16384", "1000", "1", "churn"});
  ASSERT_TRUE(p.wait_ready());
  int completed = 0, refused = 0;
  for (int i = 0; i < 8; i++) {
    std::string images = images_dir(dir, "images" + std::to_string(i));
    auto r = run({"/usr/bin/timeout", "-s", "KILL", "60", minicriu_bin(), "dump", "-t", std::to_string(p.pid()),
                  "-D", images, "-R", "--background"});
    ASSERT_NE(r.status, 128 + SIGKILL) << "dump " << i << " hung (killed after 60 s): " << r.output;
    if (r.status == 0) {
      completed++;
      EXPECT_TRUE(std::filesystem::exists(images + "/inventory.img"));
    } else {
      refused++;
      expect_one_line_error(r, "after the freeze, before the background copy reached it");
      EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
    }
  }
  std::cout << "[ churn   ] " << completed << " dump(s) completed, " << refused << " refused\n";
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

// Armed before the freeze: while the dump arms (held there 800 ms by a
// delay at its step dump/armed), the program rewrites pages, discards pages
// of a second region (MADV_DONTNEED) and touches them again; the freeze
// takes exactly those again, and the restored copy holds every page as at
// the freeze (the counters say what each holds, both regions checked).
TEST(Background, ArmedBeforeTheFreezeTheFreezeTakesWhatWasWrittenTouchedOrDiscardedMeanwhile) {
  TempDir dir;
  Program p("background_gens", dir, {"16384", "20000", "1", "holes"});
  ASSERT_TRUE(p.wait_ready());
  sleep_ms(300);
  std::string images = images_dir(dir);
  // In the middle of the arming (SIGUSR2 after 450 ms): the holes stop, so
  // that the copy after the freeze meets no discarded page (which would fail
  // it, as above).
  auto r = run_signalling("dump/armed:1:delay=800",
                          {"-v", "dump", "-t", std::to_string(p.pid()), "-D", images, "-R", "--background"}, p, 450,
                          SIGUSR2);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 process(es) armed before the freeze"), std::string::npos) << r.output;
  // Taken again before the freeze (the tree running: settle_background),
  // and the rest at the freeze: 20000 rewrites and a hole step a
  // millisecond for ~0.8 s.
  std::regex again("([0-9]+) page\\(s\\), written, first touched or discarded since it was armed: protected again "
                   "(before|at) the freeze");
  long pages = 0;
  bool at_freeze = false;
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), again), end; it != end; ++it) {
    pages += std::stol((*it)[1]);
    at_freeze = at_freeze || (*it)[2] == "at";
  }
  EXPECT_TRUE(at_freeze) << r.output;
  EXPECT_GT(pages, 1000) << r.output;
  ASSERT_NO_FATAL_FAILURE(original_then_restored(p, images, dir, 1000));
}

// A dump that lets the tree run reads smaps before the freeze: a VMA whose
// flags change in between (madvise of the whole VMA: /proc/PID/maps shows
// nothing) would be dumped with its old flags. The release reads them again
// and refuses the dump in one line; the program runs on.
TEST(LeaveRunning, FlagsChangedBetweenTheEarlySmapsAndTheFreezeFailTheDumpInOneLine) {
  TempDir dir;
  Program p("background_gens", dir, {"4096", "1000", "1", "flags"});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  // Held a second between the early smaps and the freeze; SIGUSR2 after
  // 400 ms (the early read of 16 MiB takes milliseconds): MADV_DONTFORK on
  // its whole region.
  auto r = run_signalling("dump/freeze:1:delay=1000", {"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"},
                          p, 400, SIGUSR2);
  expect_one_line_error(r, "changed while it was dumped");
  EXPECT_NE(r.output.find("dump again"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  // The next dump takes the flags as they are; the program was never harmed.
  auto again = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"});
  EXPECT_EQ(again.status, 0) << again.output;
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}
