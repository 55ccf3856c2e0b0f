// Pre-dump with write tracking (userfaultfd asynchronous write-protect read
// back with PAGEMAP_SCAN) and incremental images: a program that keeps
// rewriting its pages, each holding a generation it tracks itself, goes
// through pre-dumps and a final dump against them; restored from the end of
// the chain, every page holds exactly its generation.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "e2e_util.hpp"
#include "images/image_chain.hpp"
#include "minicriu.pb.h"
#include "minicriu/minicriu.h"
#include "minicriu/minicriu.hpp"

using namespace e2e;

namespace {

constexpr const char* kPages = "8192";  // 32 MiB
constexpr const char* kRate = "2000";   // pages rewritten a second

void let_it_write() { std::this_thread::sleep_for(std::chrono::milliseconds(150)); }

// pre-dump -D DIR [--prev-images-dir PREV], expected to succeed.
void pre_dump(const Program& p, const std::string& dir, const std::string& prev = "") {
  std::vector<std::string> args = {"pre-dump", "-t", std::to_string(p.pid()), "-D", dir};
  if (!prev.empty()) args.insert(args.end(), {"--prev-images-dir", prev});
  auto r = run_minicriu(args);
  ASSERT_EQ(r.status, 0) << r.output;
}

uint64_t own_pages(const std::string& images) {
  auto view = show_json(images);
  return view.processes_size() ? dumped_pages(view.processes(0)) : 0;
}

// Pages a pre-dump saved itself (show reads restorable images only).
uint64_t pre_dump_pages(const std::string& images) {
  auto link = minicriu::load_chain_link(images);
  EXPECT_TRUE(link) << link.error().what();
  uint64_t n = 0;
  if (link)
    for (auto& [pid, pm] : link->pagemap)
      for (auto& e : pm) n += e.in_parent() ? 0 : e.nr_pages();
  return n;
}

uint64_t parent_pages(const std::string& images) {
  auto view = show_json(images);
  uint64_t n = 0;
  for (auto& e : view.processes(0).pagemap()) n += e.in_parent() ? e.nr_pages() : 0;
  return n;
}

// Restores the images, lets the program check itself, expects 0.
void restore_and_check(pid_t pid, const std::string& images, const TempDir& dir) {
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  let_it_write();
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "generations.log");
}

// Whether this task may run on two CPUs or more (a dump then has page lanes).
bool two_cpus() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  return ::sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
}

// After a killing dump of the 40960-page program into images: every page in
// them, the program gone, and restored with every generation.
void killed_then_restored(Program& p, const std::string& images, const TempDir& dir) {
  EXPECT_GE(own_pages(images), 40960u);
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, images, dir));
}

// The final dump against prev (relative to dir), which kills the program:
// it must succeed and the program be gone by it.
void final_dump(Program& p, const std::string& dir, const std::string& prev) {
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir, "--prev-images-dir", prev});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
}

}  // namespace

TEST(PreDump, PreDumpThenFinalDumpSavesOnlyWhatWasWrittenAndRestoresEveryGeneration) {
  TempDir dir;
  Program p("generations", dir, {kPages, kRate});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  EXPECT_TRUE(p.alive());
  let_it_write();
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", d2, "--prev-images-dir", "../1", "--track-mem"});
  ASSERT_EQ(r.status, 0) << r.output;
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  // The final dump saved a share of the pages, the rest are the pre-dump's.
  uint64_t own = own_pages(d2), left = parent_pages(d2);
  EXPECT_GT(left, 4096u) << "own " << own;
  EXPECT_LT(own, 8192u / 2) << "left in the parent " << left;
  EXPECT_EQ(std::filesystem::read_symlink(d2 + "/parent"), "../1");
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d2, dir));
}

TEST(PreDump, TwoPreDumpsThenAFinalDumpLeftRunning) {
  TempDir dir;
  Program p("generations", dir, {kPages, kRate});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2"), d3 = images_dir(dir, "3");
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  let_it_write();
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d2, "../1"));
  let_it_write();
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", d3, "--prev-images-dir", d2, "-R"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GT(parent_pages(d3), 4096u);
  // The tree ran on through all of it, unharmed; then the chain restores it.
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
  ASSERT_TRUE(wait_gone(pid));
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d3, dir));
}

TEST(PreDump, AChainOfThreeRestoredTwice) {
  TempDir dir;
  Program p("generations", dir, {kPages, kRate});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2"), d3 = images_dir(dir, "3");
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  let_it_write();
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d2, "../1"));
  // The second pre-dump saved only what was written since the first.
  EXPECT_GE(pre_dump_pages(d1), 8192u);
  EXPECT_LT(pre_dump_pages(d2), 8192u / 2);
  let_it_write();
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(final_dump(p, d3, "../2"));
  // show tells the chain.
  auto shown = run_minicriu({"show", "-D", d3});
  EXPECT_NE(shown.output.find("parent images: ../2"), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("pre-dump"), std::string::npos) << shown.output;
  for (int i = 0; i < 2; i++) {
    SCOPED_TRACE(i);
    ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d3, dir));
  }
}

TEST(PreDump, AParentOfAnotherProcessIsRefusedInOneLine) {
  TempDir dir, other;  // one directory per program: its ready file and log
  Program a("generations", dir, {"256", "100"});
  Program b("generations", other, {"256", "100"});
  ASSERT_TRUE(a.wait_ready());
  ASSERT_TRUE(b.wait_ready());
  std::string da = images_dir(dir, "a"), db = images_dir(dir, "b");
  ASSERT_NO_FATAL_FAILURE(pre_dump(a, da));
  auto r = run_minicriu({"dump", "-t", std::to_string(b.pid()), "-D", db, "--prev-images-dir", da});
  expect_one_line_error(r, "not of this tree");
  EXPECT_NE(r.output.find("pid " + std::to_string(a.pid())), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(db + "/inventory.img"));
  // Both run on, unharmed (a's tracking still held for its own next round).
  ASSERT_NO_FATAL_FAILURE(expect_intact(b));
  ASSERT_NO_FATAL_FAILURE(expect_intact(a));
}

TEST(PreDump, WhenTheTrackingHolderIsGoneTheFinalDumpSavesEveryPageAndSaysSo) {
  TempDir dir;
  Program p("generations", dir, {"1024", "500"});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  auto pre = run_minicriu({"pre-dump", "-t", std::to_string(p.pid()), "-D", d1, "--tracking-timeout", "1"});
  ASSERT_EQ(pre.status, 0) << pre.output;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  reap_zombies();
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", d2, "--prev-images-dir", "../1"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("write tracking since those images is gone"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  EXPECT_EQ(parent_pages(d2), 0u);
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d2, dir));
}

TEST(PreDump, APreDumpIsNotRestorable) {
  TempDir dir;
  Program p("generations", dir, {"256", "100"});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1");
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  expect_one_line_error(run_minicriu({"restore", "-D", d1}), "is a pre-dump");
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

TEST(PreDumpLibrary, DumpItersRunsRoundsUntilTheCallbackSaysFinalAndReportsEach) {
  TempDir dir;
  Program p("generations", dir, {kPages, kRate});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir, "iters");
  minicriu::DumpOptions o;
  o.pid = p.pid();
  o.images_dir = images;
  std::vector<minicriu::DumpRound> asked;
  auto r = minicriu::dump_iters(o, [&](const minicriu::DumpRound& round) {
    asked.push_back(round);
    let_it_write();
    return round.round < 2 ? 1 : 0;
  });
  ASSERT_TRUE(r) << r.error().what();
  ASSERT_EQ(r->rounds.size(), 3u);
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_FALSE(r->rounds[0].final);
  EXPECT_TRUE(r->rounds[2].final);
  EXPECT_EQ(r->images_dir, images + "/3");
  // The first round saves everything; the later ones what was written.
  EXPECT_GE(r->rounds[0].pages_written, 8192u);
  EXPECT_EQ(r->rounds[0].pages_in_parent, 0u);
  for (int i = 1; i < 3; i++) {
    SCOPED_TRACE(i);
    EXPECT_GT(r->rounds[i].pages_changed, 0u);
    EXPECT_GT(r->rounds[i].pages_in_parent, 4096u);
    EXPECT_LT(r->rounds[i].pages_written, 8192u / 2);
    EXPECT_GT(r->rounds[i].frozen_ns, 0u);
  }
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, r->images_dir, dir));
}

namespace {
int abort_after_first(const minicriu_dump_round* round, void* arg) {
  *static_cast<unsigned*>(arg) = round->round;
  return -1;
}
}  // namespace

TEST(PreDumpLibrary, TheCAbiAbortsWhenTheCallbackSaysSoAndTheTreeRunsOn) {
  TempDir dir;
  Program p("generations", dir, {"512", "200"});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir, "iters");
  minicriu_dump_opts* o = minicriu_dump_opts_new();
  ASSERT_EQ(minicriu_dump_opts_set_pid(o, p.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(o, images.c_str()), 0);
  unsigned seen = 0, rounds = 0;
  EXPECT_EQ(minicriu_dump_iters(o, abort_after_first, &seen, &rounds), -1);
  EXPECT_EQ(seen, 1u);
  EXPECT_NE(std::string(minicriu_last_error()).find("aborted after round 1"), std::string::npos)
      << minicriu_last_error();
  EXPECT_EQ(minicriu_dump_iters(o, nullptr, nullptr, nullptr), -1);
  minicriu_dump_opts_free(o);
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

// The C ABI's own pre-dump and incremental final dump (not dump_iters): a
// pre-dump leaves its tracking in a holder, the final dump takes it, saves
// only what was written since, and restores every generation.
TEST(PreDumpLibrary, TheCAbiPreDumpsAndDumpsAgainstThePreDump) {
  TempDir dir;
  Program p("generations", dir, {kPages, kRate});
  ASSERT_TRUE(p.wait_ready());
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  minicriu_dump_opts* o = minicriu_dump_opts_new();
  ASSERT_EQ(minicriu_dump_opts_set_pid(o, p.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(o, d1.c_str()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_pre_dump(o, 1), 0);
  ASSERT_EQ(minicriu_dump_opts_set_tracking_timeout(o, 60), 0);
  ASSERT_EQ(minicriu_dump(o), 0) << minicriu_last_error();
  EXPECT_TRUE(p.alive());
  uint64_t first = pre_dump_pages(d1);
  EXPECT_GE(first, 8192u);
  // show reads a pre-dump too: its memory, as text and JSON.
  auto shown = run_minicriu({"show", "-D", d1});
  EXPECT_EQ(shown.status, 0) << shown.output;
  EXPECT_NE(shown.output.find("pre-dump: root pid " + std::to_string(p.pid())), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("not restorable"), std::string::npos) << shown.output;
  auto view = show_json(d1);
  ASSERT_EQ(view.processes_size(), 1);
  EXPECT_TRUE(view.inventory().pre_dump());
  EXPECT_EQ(dumped_pages(view.processes(0)), first);
  EXPECT_GT(view.processes(0).mm().vmas_size(), 0);
  auto bt = run_minicriu({"show", "-D", d1, "--backtrace"});
  EXPECT_NE(bt.status, 0);
  EXPECT_NE(bt.output.find("holds no registers"), std::string::npos) << bt.output;
  let_it_write();
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(o, d2.c_str()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_pre_dump(o, 0), 0);
  ASSERT_EQ(minicriu_dump_opts_set_prev_images_dir(o, "../1"), 0);
  ASSERT_EQ(minicriu_dump(o), 0) << minicriu_last_error();
  minicriu_dump_opts_free(o);
  EXPECT_GT(parent_pages(d2), 4096u);
  EXPECT_LT(own_pages(d2), first / 2);
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d2, dir));
}

// 256 MiB: over what one thread reads (restorer/page_fill.hpp), so the
// restore splits the reads of both page images of the chain between its
// reader threads, wherever this machine has two CPUs or more, each reading
// more than one batch (64 MiB).
TEST(PreDump, AChainOfALargeProcessReadByThreadsRestoresEveryGeneration) {
  TempDir dir;
  Program p("generations", dir, {"65536", kRate});
  ASSERT_TRUE(p.wait_ready(30000));
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  let_it_write();
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(final_dump(p, d2, "../1"));
  EXPECT_GT(parent_pages(d2), 32768u);
  EXPECT_GT(own_pages(d2), 0u);
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d2, dir));
}

// A mapping of 160 MiB is walked in 64 MiB chunks by workers (ScanAhead),
// frozen: by a full dump, and by the final dump of a chain, where a chunk's
// unwritten pages stay in the parent. Both restore every generation.
TEST(PreDump, ALargeMappingWalkedInChunksRestoresEveryGenerationFullAndChained) {
  constexpr const char* kLarge = "40960";  // 160 MiB: two whole chunks and a part
  TempDir dir;
  Program p("generations", dir, {kLarge, "20000"});
  ASSERT_TRUE(p.wait_ready());
  std::string full = images_dir(dir, "full"), d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  auto r = run_minicriu({"-vv", "dump", "-t", std::to_string(p.pid()), "-D", full, "-R"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("MiB chunks by"), std::string::npos) << r.output;
  EXPECT_GE(own_pages(full), 40960u);
  // With two CPUs or more, its pages went into a file per worker (lanes).
  std::string lane1 = full + "/pages-" + std::to_string(p.pid()) + ".1.img";
  if (two_cpus()) {
    EXPECT_GT(std::filesystem::file_size(lane1), 40960u * 4096 / 4) << r.output;
    // vmsplice'd by the parasite, a pipe per lane (the restore below checks
    // every page).
    EXPECT_NE(r.output.find("vmsplice'd by the parasite into"), std::string::npos) << r.output;
  }
  if (std::filesystem::exists(lane1)) {
    // A lane file missing or cut short: the restore refuses in one line.
    std::string broken = images_dir(dir, "broken");
    std::filesystem::remove_all(broken);
    std::filesystem::copy(full, broken, std::filesystem::copy_options::recursive);
    std::string lane1_copy = broken + "/pages-" + std::to_string(p.pid()) + ".1.img";
    std::filesystem::resize_file(lane1_copy, std::filesystem::file_size(lane1_copy) - 4096);
    auto refused = run_minicriu({"restore", "-d", "-D", broken});
    EXPECT_NE(refused.status, 0);
    EXPECT_NE(refused.output.find("truncated or mismatched page image"), std::string::npos) << refused.output;
    std::filesystem::remove(lane1_copy);
    refused = run_minicriu({"restore", "-d", "-D", broken});
    EXPECT_NE(refused.status, 0);
    EXPECT_NE(refused.output.find("cannot stat the page image"), std::string::npos) << refused.output;
    EXPECT_TRUE(p.alive());
  }
  ASSERT_NO_FATAL_FAILURE(pre_dump(p, d1));
  let_it_write();
  r = run_minicriu({"-vv", "dump", "-t", std::to_string(p.pid()), "-D", d2, "--prev-images-dir", "../1"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("MiB chunks by"), std::string::npos) << r.output;
  pid_t pid = p.pid();
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  EXPECT_GT(parent_pages(d2), 40960u / 2);
  EXPECT_LT(own_pages(d2), 40960u / 2);
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, d2, dir));
  // The full dump of the same program, taken earlier, restores too.
  ASSERT_TRUE(wait_gone(pid));
  ASSERT_NO_FATAL_FAILURE(restore_and_check(pid, full, dir));
}

// A parasite that cannot vmsplice a batch into the page lanes (EFAULT
// halfway through its second batch, injected): that batch is copied by the
// dumper's workers at the same places in the lane files, and so is the rest
// of the process; every generation restores.
TEST(PageLanes, AParasiteThatCannotVmspliceLeavesThePagesToTheWorkers) {
  if (!two_cpus()) GTEST_SKIP() << "page lanes need two CPUs";
  TempDir dir;
  Program p("generations", dir, {"40960", "20000"});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir, "d");
  auto r = run({"/usr/bin/env", "MINICRIU_FAULT=parasite-splice", minicriu_bin(), "-vv", "dump", "-t",
                std::to_string(p.pid()), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("fault injected: the parasite fails its second vmsplice"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("the parasite cannot vmsplice these pages (Bad address); the dumper's workers copy them"),
            std::string::npos)
      << r.output;
  // The first batch (64 MiB) went through the pipes.
  EXPECT_NE(r.output.find("MiB vmsplice'd by the parasite into 2 page files"), std::string::npos) << r.output;
  ASSERT_NO_FATAL_FAILURE(killed_then_restored(p, images, dir));
}

// A process at its RLIMIT_NOFILE: the parasite's socket takes its last free
// fd but one, the first lane's pipe the last, the second's cannot come with
// its message. Its pages are copied by the dumper's workers instead (the
// dump does not fail, as it did not before the parasite vmspliced into
// lanes), and restore every generation.
TEST(PageLanes, AProcessAtItsFdLimitHasItsPagesCopiedByTheWorkers) {
  if (!two_cpus()) GTEST_SKIP() << "page lanes need two CPUs";
  TempDir dir;
  Program p("generations", dir, {"40960", "20000"});
  ASSERT_TRUE(p.wait_ready());
  int open_fds = 0, highest = -1;
  for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(p.pid()) + "/fd")) {
    open_fds++;
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  }
  ASSERT_EQ(highest, open_fds - 1) << "its fds are not 0..N-1";
  rlimit lim{static_cast<rlim_t>(open_fds + 2), static_cast<rlim_t>(open_fds + 2)};
  ASSERT_EQ(::prlimit(p.pid(), RLIMIT_NOFILE, &lim, nullptr), 0);
  std::string images = images_dir(dir, "d");
  auto r = run_minicriu({"-vv", "dump", "-t", std::to_string(p.pid()), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the parasite cannot take page pipe 1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("vmsplice'd by the parasite into"), std::string::npos) << r.output;
  ASSERT_NO_FATAL_FAILURE(killed_then_restored(p, images, dir));
}
