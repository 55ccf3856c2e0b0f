// restore --lazy: the restored tree runs before its memory is back; each page
// comes on first touch (userfaultfd), the rest from a background prefetch,
// and the pager (detached with -d) exits once every page is in. The program
// (tests/programs/lazy.c) checks every word of its memory itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

// Every child of ours (the restored tree, the detached pager: we are their
// subreaper) has exited and is reaped.
bool wait_no_children(int timeout_ms = 30000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    pid_t r = ::waitpid(-1, nullptr, WNOHANG);
    if (r < 0 && errno == ECHILD) return true;
    if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// `restore -d --lazy`, its log in log_file: the restored root's pid.
pid_t restore_lazy(const std::string& images, const std::string& log_file) {
  auto r = run_minicriu({"restore", "-d", "--lazy", "-v3", "-o", log_file, "-D", images});
  EXPECT_EQ(r.status, 0) << r.output << read_text(log_file);
  return restored_pid(r);
}

// The lines of text holding needle.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) out.push_back(line);
  return out;
}

// The figure before `what` in the pager's last line ("3 fork(s)").
uint64_t pager_count(const std::string& log, const std::string& what) {
  auto done = lines_with(log, "every page is in");
  if (done.empty()) return 0;
  const std::string& l = done.back();
  auto at = l.find(what);
  if (at == std::string::npos || at < 2) return 0;
  size_t start = at - 1;  // the figure ends before the space before `what`
  while (start > 0 && std::isdigit(static_cast<unsigned char>(l[start - 1]))) start--;
  return std::strtoull(l.c_str() + start, nullptr, 10);
}

// Starts a program (lazy.c unless named) with args, dumps it (killing it),
// restores it lazily, lets it check itself: its exit status, and the
// restore's log once the pager is gone.
struct LazyRun {
  int status = -1;
  std::string log;
};
LazyRun dump_and_restore_lazily(const TempDir& dir, std::vector<std::string> args,
                                const char* program = "lazy") {
  LazyRun run;
  Program p(program, dir, args);
  EXPECT_TRUE(p.wait_ready(60000));
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  dump_and_reap(pid, images, &p);
  RestoredTree restored;
  restored.add_from(images);
  std::string log = dir / "restore.log";
  EXPECT_EQ(restore_lazy(images, log), pid);
  ::kill(pid, SIGUSR1);
  run.status = wait_pid(pid, 60000).value_or(-1);
  EXPECT_TRUE(wait_no_children()) << "the pager did not finish";
  run.log = read_text(log);
  return run;
}

}  // namespace

TEST(LazyRestore, OneGiBWithThreadsComesBackWordForWord) {
  TempDir dir;
  LazyRun r = dump_and_restore_lazily(dir, {"1024", "4"});
  EXPECT_EQ(r.status, 0) << read_text(dir / "lazy.log") << r.log;
  // The pages came lazily: the restore read (nearly) none of the GiB, the
  // pager copied it all.
  EXPECT_FALSE(lines_with(r.log, "MiB of pages come on first touch").empty()) << r.log;
  EXPECT_GE(pager_count(r.log, "MiB copied"), 1024u) << r.log;
  EXPECT_GE(pager_count(r.log, "fault(s)"), 1u) << r.log;
  EXPECT_TRUE(lines_with(r.log, "error").empty()) << r.log;
}

// lazy.c events: also MADV_WIPEONFORK memory, which the child forked in the
// lazy phase reads as zero (not refilled from the images).
TEST(LazyRestore, ForkMremapMadviseAndMunmapDuringTheLazyPhase) {
  TempDir dir;
  LazyRun r = dump_and_restore_lazily(dir, {"512", "0", "events"});
  EXPECT_EQ(r.status, 0) << read_text(dir / "lazy.log") << r.log;
  EXPECT_GE(pager_count(r.log, "fork(s)"), 1u) << r.log;
  EXPECT_GE(pager_count(r.log, "mremap(s)"), 1u) << r.log;
  EXPECT_GE(pager_count(r.log, "madvise remove(s)"), 1u) << r.log;
  EXPECT_GE(pager_count(r.log, "munmap(s)"), 1u) << r.log;
}

TEST(LazyRestore, FromAPreDumpChain) {
  TempDir dir;
  Program p("lazy", dir, {"128", "2"});
  ASSERT_TRUE(p.wait_ready(30000));
  pid_t pid = p.pid();
  std::string d1 = images_dir(dir, "1"), d2 = images_dir(dir, "2");
  auto pre = run_minicriu({"pre-dump", "-t", std::to_string(pid), "-D", d1});
  ASSERT_EQ(pre.status, 0) << pre.output;
  auto dump = run_minicriu({"dump", "-t", std::to_string(pid), "-D", d2, "--prev-images-dir", "../1", "--track-mem"});
  ASSERT_EQ(dump.status, 0) << dump.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  // Most pages are the pre-dump's: the lazy pager reads them up the chain.
  uint64_t in_parent = 0;
  auto view = show_json(d2);
  ASSERT_EQ(view.processes_size(), 1);
  for (auto& e : view.processes(0).pagemap()) in_parent += e.in_parent() ? e.nr_pages() : 0;
  EXPECT_GT(in_parent, 128u * 256 / 2);
  RestoredTree restored;
  restored.add_from(d2);
  std::string log = dir / "restore.log";
  ASSERT_EQ(restore_lazy(d2, log), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid, 60000).value_or(-1), 0) << read_text(dir / "lazy.log") << read_text(log);
  EXPECT_TRUE(wait_no_children());
  EXPECT_GE(pager_count(read_text(log), "MiB copied"), 128u) << read_text(log);
}

// A page that cannot come (here the pager's 200th read of the images fails,
// MINICRIU_FAULT): the tree is killed, nothing is left, one line says which
// process and where.
TEST(LazyRestore, APageThatCannotComeKillsTheTreeWithOneLine) {
  TempDir dir;
  Program p("lazy", dir, {"1024", "2"});
  ASSERT_TRUE(p.wait_ready(60000));
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  dump_and_reap(pid, images, &p);
  RestoredTree restored;
  restored.add_from(images);
  std::string log = dir / "restore.log";
  ::setenv("MINICRIU_FAULT", "lazy/read:200", 1);
  pid_t got = restore_lazy(images, log);
  ::unsetenv("MINICRIU_FAULT");
  ASSERT_EQ(got, pid);
  EXPECT_EQ(wait_pid(pid, 60000).value_or(-1), 128 + SIGKILL);
  EXPECT_TRUE(wait_no_children());
  EXPECT_FALSE(pid_exists(pid));
  std::string text = read_text(log);
  auto errors = lines_with(text, "error");
  ASSERT_EQ(errors.size(), 1u) << text;
  EXPECT_NE(errors[0].find("lazy restore failed"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("pid " + std::to_string(pid)), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("0x"), std::string::npos) << errors[0];
}

// The same with the pages image cut short under the running pager: the
// read that finds it short kills the tree.
TEST(LazyRestore, APagesImageTruncatedDuringTheLazyPhaseKillsTheTree) {
  TempDir dir;
  Program p("lazy", dir, {"1024", "0"});
  ASSERT_TRUE(p.wait_ready(60000));
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  dump_and_reap(pid, images, &p);
  RestoredTree restored;
  restored.add_from(images);
  std::string log = dir / "restore.log";
  ASSERT_EQ(restore_lazy(images, log), pid);
  for (auto& f : std::filesystem::directory_iterator(images))
    if (f.path().filename().string().starts_with("pages-")) std::filesystem::resize_file(f.path(), 4096);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid, 60000).value_or(-1), 128 + SIGKILL);
  EXPECT_TRUE(wait_no_children());
  auto errors = lines_with(read_text(log), "error");
  ASSERT_EQ(errors.size(), 1u) << read_text(log);
  EXPECT_NE(errors[0].find("lazy restore failed"), std::string::npos) << errors[0];
}

namespace {

// The figures of lazyshm.resident: pages of the shared anonymous memory and
// of the memfd in at the restored process's first instructions, and of all.
struct Resident {
  uint64_t anon_in = 0, anon = 0, memfd_in = 0, memfd = 0;
};
Resident resident_at_first_instruction(const TempDir& dir) {
  Resident r;
  std::istringstream in(read_text(dir / "lazyshm.resident"));
  in >> r.anon_in >> r.anon >> r.memfd_in >> r.memfd;
  return r;
}


}  // namespace

// A parent and its child share 256 MiB of shared anonymous memory, a memfd
// (its fd closed) and a removed System V segment: the first two come on
// first touch (userfaultfd does not take System V attachments: eager),
// every word in both processes, a write by one seen by the other in the lazy
// phase, each object filled once however many map it.
TEST(LazyRestore, SharedMemoryOfAParentAndItsChildComesOnFirstTouch) {
  TempDir dir;
  LazyRun r = dump_and_restore_lazily(dir, {"256"}, "lazyshm");
  EXPECT_EQ(r.status, 0) << read_text(dir / "lazyshm.log") << r.log;
  // 256 + 32 MiB of shared memory, lazily, once (not once per mapper).
  EXPECT_FALSE(lines_with(r.log, "and 288 MiB of 2 shared memory object(s)").empty()) << r.log;
  uint64_t shared = pager_count(r.log, "MiB shared memory copied");
  EXPECT_GE(shared, 288u) << r.log;
  EXPECT_LE(shared, 289u) << r.log;
  EXPECT_GE(pager_count(r.log, "fault(s) in shared memory"), 1u) << r.log;
  // The first instruction ran before the shared pages were in.
  Resident at = resident_at_first_instruction(dir);
  EXPECT_EQ(at.anon, 256u * 256) << read_text(dir / "lazyshm.resident");
  EXPECT_LT(at.anon_in, at.anon / 2) << read_text(dir / "lazyshm.resident");
  EXPECT_LT(at.memfd_in, at.memfd) << read_text(dir / "lazyshm.resident");
  EXPECT_TRUE(lines_with(r.log, "error").empty()) << r.log;
}

// A memfd an fd still holds is read by read(2), which does not fault: it is
// restored eagerly, the other objects lazily, and all read right.
TEST(LazyRestore, AMemfdHeldByAnFdComesEagerlyTheRestLazily) {
  TempDir dir;
  LazyRun r = dump_and_restore_lazily(dir, {"64", "fd"}, "lazyshm");
  EXPECT_EQ(r.status, 0) << read_text(dir / "lazyshm.log") << r.log;
  EXPECT_FALSE(lines_with(r.log, "and 64 MiB of 1 shared memory object(s)").empty()) << r.log;
  uint64_t shared = pager_count(r.log, "MiB shared memory copied");
  EXPECT_GE(shared, 64u) << r.log;
  EXPECT_LE(shared, 65u) << r.log;
  Resident at = resident_at_first_instruction(dir);
  EXPECT_EQ(at.memfd_in, at.memfd) << read_text(dir / "lazyshm.resident");
  EXPECT_LT(at.anon_in, at.anon) << read_text(dir / "lazyshm.resident");
}

// fork, mremap (away and back), madvise(DONTNEED) and munmap of shared
// memory during the lazy phase: the grandchild's copies miss what the
// parent's missed, moved words keep their values, DONTNEED keeps shared data,
// and the child still reads what the parent unmapped.
TEST(LazyRestore, ForkMremapMadviseAndMunmapOfSharedMemoryDuringTheLazyPhase) {
  TempDir dir;
  LazyRun r = dump_and_restore_lazily(dir, {"256", "events"}, "lazyshm");
  EXPECT_EQ(r.status, 0) << read_text(dir / "lazyshm.log") << r.log;
  EXPECT_GE(pager_count(r.log, "fork(s)"), 1u) << r.log;
  EXPECT_GE(pager_count(r.log, "mremap(s)"), 2u) << r.log;
  EXPECT_GE(pager_count(r.log, "madvise remove(s)"), 1u) << r.log;
  EXPECT_GE(pager_count(r.log, "munmap(s)"), 1u) << r.log;
  EXPECT_LE(pager_count(r.log, "MiB shared memory copied"), 289u) << r.log;
}
