// A dumper killed midway (SIGKILL: what the OOM killer or a job scheduler
// does) is harmless (issue 16). The tree is held in a group stop while it is
// seized, and the dump's guardian (src/core/guardian.hpp) replays its journal
// (src/base/journal.hpp): registers, code bytes, the parasite's leftovers,
// the stopped processes continued.
//
// KillWalk.ADumperKilledAnywhereLeavesTheTreeIntact: the tree of the fault
// walk (tests/programs/faultwalk.c: two processes of three threads, a pipe
// with bytes in flight, a unix pair and a TCP connection with bytes queued
// both ways, a ghost file, a link remap; no pending connection) is dumped
// with --leave-running and the dumper SIGKILLed after a delay, for delays
// spread over the time a dump takes. Each time: every process of the tree
// holds the fds and mappings it held before (no parasite mapping, memfd or
// socket), no thread is traced or stopped, no nftables table of ours is
// left, and the tree passes its own verification.
//
// KillWalk.CheckCleanupPutsBackATreeWhoseGuardianDiedToo: the dumper and its
// guardian both SIGKILLed with the parasite in (the dump held at a parasite
// command): the tree stays stopped, not dead; `check --cleanup` leaves a
// journal whose dumper runs alone, and replays it once both are dead.
// KillWalk.TheNextDumpReplaysTheJournalOfADeadOne: the same, put back by
// the next dump of the same tree.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "e2e_util.hpp"
#include "net/network_lock.hpp"

using namespace e2e;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// Every process of the tree under root, root first.
std::vector<pid_t> processes_under(pid_t root) {
  std::vector<pid_t> pids{root};
  for (size_t i = 0; i < pids.size(); i++) {
    std::error_code ec;
    for (auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pids[i]) + "/task", ec)) {
      std::istringstream in(read_text(t.path().string() + "/children"));
      pid_t c;
      while (in >> c) pids.push_back(c);
    }
  }
  return pids;
}

// SIGUSR2 to faultwalk's root: "" if it verified itself.
std::string verify(pid_t root, const TempDir& dir, unsigned& round) {
  round++;
  ::kill(root, SIGUSR2);
  std::string want = "verified " + std::to_string(round) + " ";
  auto deadline = Clock::now() + 5s;
  std::string got;
  while (Clock::now() < deadline) {
    got = read_text(dir / "faultwalk.verified");
    if (got.starts_with(want)) return got == want + "ok\n" ? "" : "its own checks failed: " + got;
    std::this_thread::sleep_for(2ms);
  }
  return "no answer to its own check (last: " + got + ")";
}

bool table_left(pid_t root) {
  auto tables = minicriu::network_lock_tables();
  if (!tables) return false;
  std::string prefix = "minicriu-" + std::to_string(root) + "-";
  for (auto& t : *tables)
    if (t.starts_with(prefix)) return true;
  return false;
}

// The dumper, started in the background with the journal directory given.
struct Dumper {
  pid_t pid = -1;
  std::string out;

  Dumper(const std::vector<std::string>& args, const std::string& journals, const std::string& out_file,
         const std::string& fault = "")
      : out(out_file) {
    pid = ::fork();
    if (pid == 0) {
      int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      ::setenv("MINICRIU_JOURNAL_DIR", journals.c_str(), 1);
      if (!fault.empty()) ::setenv("MINICRIU_FAULT", fault.c_str(), 1);
      std::vector<std::string> argv{minicriu_bin()};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      ::_exit(127);
    }
  }
  // Its exit status (128 + signal), reaped.
  int wait() {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  ~Dumper() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait();
    }
  }
};

std::string journal_of(const std::string& journals, pid_t root) {
  return journals + "/dump-" + std::to_string(root) + ".journal";
}

// The guardian's pid from the journal's "guardian PID START" line (-1).
pid_t guardian_in(const std::string& journal) {
  std::ifstream in(journal);
  std::string word;
  pid_t pid;
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    if (f >> word >> pid && word == "guardian") return pid;
  }
  return -1;
}

// Waits until the journal is gone (the guardian replayed it, or the dump
// ended) and reaps what exited (the guardian is reparented to us).
bool journal_done(const std::string& journal, int timeout_ms = 15000) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::filesystem::exists(journal)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  // The guardian exits right after removing it.
  for (int i = 0; i < 50; i++) {
    reap_zombies();
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// The images and the link remap a complete (leave-running) dump leaves.
void clean_after(const std::string& images, const TempDir& dir) {
  std::error_code ec;
  for (auto& f : std::filesystem::directory_iterator(images, ec)) std::filesystem::remove_all(f.path(), ec);
  for (auto& f : std::filesystem::directory_iterator(dir.path(), ec))
    if (f.path().filename().string().starts_with(".minicriu-link-")) std::filesystem::remove(f.path(), ec);
}

// "" while pid runs; else what it died of, from its zombie's stat (field 52,
// the wait status its parent has not collected yet), or "gone".
std::string death_of(pid_t pid) {
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  if (stat.empty() || paren == std::string::npos) return "gone (reaped)";
  std::istringstream in(stat.substr(paren + 2));
  std::vector<std::string> f;
  for (std::string w; in >> w;) f.push_back(w);
  // f[0] is field 3 (the state); field 52 is f[49].
  if (f.empty() || f[0] != "Z") return "";
  if (f.size() < 50) return "a zombie";
  int status = std::stoi(f[49]);
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), strsignal(WTERMSIG(status)),
                       WCOREDUMP(status) ? ", core dumped" : "");
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

std::string difference(pid_t pid, const Holdings& before, const Holdings& now) {
  std::string out = "pid " + std::to_string(pid) + ":";
  for (auto& [fd, link] : now.fds)
    if (!before.fds.count(fd) || before.fds.at(fd) != link) out += " +fd " + std::to_string(fd) + "=" + link;
  for (auto& [fd, link] : before.fds)
    if (!now.fds.count(fd)) out += " -fd " + std::to_string(fd);
  if (now.maps != before.maps) out += " maps changed";
  if (now.threads != before.threads)
    for (auto& [tid, s] : now.threads) out += " thread " + tid + " " + s;
  return out;
}

struct Tree {
  TempDir dir;
  std::string images = images_dir(dir);
  std::string journals = dir / "journals";
  Program p{"faultwalk", dir};
  pid_t root = -1;
  std::vector<pid_t> pids;
  std::map<pid_t, Holdings> before;
  unsigned round = 0;

  void start() {
    std::filesystem::create_directory(journals);
    ASSERT_TRUE(p.wait_ready());
    root = p.pid();
    pids = processes_under(root);
    ASSERT_EQ(pids.size(), 2u);
    for (pid_t pid : pids) before[pid] = holdings_of(pid);
  }
  std::vector<std::string> extra;  // more dump options
  std::vector<std::string> dump_args() const {
    std::vector<std::string> args{"dump", "-t", std::to_string(root), "-D", images, "-R"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  // "" when every process holds what it held and the tree verifies itself.
  std::string problems() {
    std::string out;
    for (pid_t pid : pids)
      if (auto d = death_of(pid); !d.empty()) out += fmt::format("pid {} {}; ", pid, d);
    if (!out.empty()) return out;
    for (pid_t pid : pids) {
      Holdings now = holdings_of(pid);
      if (!(now == before[pid])) out += difference(pid, before[pid], now) + "; ";
    }
    if (table_left(root)) out += "an nftables table of ours is left; ";
    if (!out.empty()) return out;  // a stopped tree would not answer
    return verify(root, dir, round);
  }
  bool stopped_now() const {
    for (pid_t pid : pids)
      for (auto& [tid, s] : holdings_of(pid).threads)
        if (s.find(" stopped ") == std::string::npos) return false;
    return true;
  }
  std::string states() const {
    std::string out;
    for (pid_t pid : pids)
      for (auto& [tid, s] : holdings_of(pid).threads) out += fmt::format("{}: {}; ", tid, s);
    return out;
  }
  // Every thread in its group stop within 2 s: a thread whose tracer died is
  // woken by the kernel, and takes a moment to stop again.
  bool stopped() const {
    auto deadline = Clock::now() + 2s;
    while (!stopped_now()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
  ~Tree() {
    if (root > 0 && p.alive()) {
      ::kill(root, SIGUSR1);
      p.wait_exit();
    }
  }
};

// The walk, the dump given extra options.
void kill_walk(const std::vector<std::string>& extra) {
  auto t0 = Clock::now();
  Tree t;
  t.extra = extra;
  ASSERT_NO_FATAL_FAILURE(t.start());
  std::string journal = journal_of(t.journals, t.root);

  // How long a whole dump takes here, now (the machine is shared: it varies;
  // the first dump is often slower: the shorter of two).
  double dump_ms = 0;
  for (int round = 0; round < 2; round++) {
    auto d0 = Clock::now();
    {
      auto args = t.dump_args();
      args.push_back("-vv");
      Dumper whole(args, t.journals, t.dir / "dumper.out");
      ASSERT_EQ(whole.wait(), 0) << read_text(t.dir / "dumper.out");
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - d0).count();
    dump_ms = round == 0 ? ms : std::min(dump_ms, ms);
    ASSERT_TRUE(journal_done(journal));
    clean_after(t.images, t.dir);
  }
  ASSERT_TRUE(journal_done(journal));
  clean_after(t.images, t.dir);
  ASSERT_EQ(t.problems(), "") << t.p.log();

  // MINICRIU_KILL_WALK_KILLS: a denser walk, to hunt a narrow window by hand.
  int kKills = 15;
  if (const char* n = std::getenv("MINICRIU_KILL_WALK_KILLS"); n && std::atoi(n) > 0) kKills = std::atoi(n);
  unsigned replayed = 0, completed = 0, problems = 0;
  std::string report;
  for (int i = 1; i <= kKills; i++) {
    // Spread over the dump, a little past its end too (the release).
    double delay_ms = dump_ms * i / kKills;
    std::string out = t.dir / ("kill" + std::to_string(i) + ".out");
    // At -vv: a problem's report shows how far the dump got.
    auto args = t.dump_args();
    args.push_back("-vv");
    Dumper d(args, t.journals, out);
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(delay_ms * 1000)));
    ::kill(d.pid, SIGKILL);
    int status = d.wait();
    bool done_journal = journal_done(journal);
    std::string text = read_text(out);
    if (status == 0) completed++;
    if (text.find("guardian: ") != std::string::npos) replayed++;
    std::string bad = done_journal ? t.problems() : "the journal is still there after 15 s";
    if (!bad.empty()) {
      problems++;
      report += "kill " + std::to_string(i) + " after " + std::to_string(static_cast<int>(delay_ms)) +
                " ms: " + bad + "\n" + text + "\n";
      if (!t.p.alive()) break;
    }
    clean_after(t.images, t.dir);
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("[ kill walk ] %d kills over a dump of %.0f ms: %u put back by the guardian, %u after the dump "
              "ended, %u before anything was changed; %u problem(s), %.1f s\n",
              kKills, dump_ms, replayed, completed, kKills - replayed - completed, problems, secs);
  EXPECT_EQ(problems, 0u) << report << t.p.log();
  EXPECT_GT(replayed, 0u) << "no kill landed while the tree was held";
}

}  // namespace

TEST(KillWalk, ADumperKilledAnywhereLeavesTheTreeIntact) { kill_walk({}); }

// The same with --background: kills land in the short stop that arms the
// memory before the freeze, while it is armed with the tree running, in the
// freeze, and in the copy after the release (the dumper's userfaultfd dies
// with it, which lifts every protection: no write of the tree waits).
TEST(KillWalk, ADumperKilledAnywhereInABackgroundDumpLeavesTheTreeIntact) { kill_walk({"--background"}); }

// A process of 160 MiB, whose pages the parasite vmsplices into a pipe per
// page lane while the dumper's workers splice them into the page files,
// with the dumper SIGKILLed at delays spread over its page phase: its pipes
// close under a parasite that may be blocked in vmsplice (the group stop the
// dump set up takes the thread out of the call first, when its tracer dies;
// a SIGPIPE raised all the same would be taken away by the guardian with the
// rest). Each time the process holds what it held and runs on; at the end
// it verifies every page it wrote.
TEST(KillWalk, ADumperKilledWhileThePagesGoThroughItsPipesLeavesTheProcessIntact) {
  TempDir dir;
  std::string journals = dir / "journals";
  std::filesystem::create_directory(journals);
  std::string images = images_dir(dir);
  Program p("generations", dir, {"40960", "20000"});
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  for (auto& [tid, st] : before.threads) ASSERT_EQ(st, "tracer 0 runs") << tid;
  std::vector<std::string> args{"-vv", "dump", "-t", std::to_string(p.pid()), "-D", images, "-R"};
  std::string journal = journal_of(journals, p.pid());
  double dump_ms = 1e9;
  std::string whole_out;
  for (int round = 0; round < 2; round++) {
    auto d0 = Clock::now();
    Dumper whole(args, journals, dir / "whole.out");
    ASSERT_EQ(whole.wait(), 0) << read_text(dir / "whole.out");
    dump_ms = std::min(dump_ms, std::chrono::duration<double, std::milli>(Clock::now() - d0).count());
    whole_out = read_text(dir / "whole.out");
    ASSERT_TRUE(journal_done(journal));
    clean_after(images, dir);
  }
  if (whole_out.find("vmsplice'd by the parasite into") == std::string::npos)
    GTEST_SKIP() << "no page lanes here (one CPU)";
  constexpr int kKills = 10;
  unsigned problems = 0, in_pages = 0, sigpipes = 0;
  std::string report;
  for (int i = 0; i < kKills; i++) {
    double delay_ms = dump_ms * (0.25 + 0.7 * i / kKills);
    std::string out = dir / ("kill" + std::to_string(i) + ".out");
    Dumper d(args, journals, out);
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(delay_ms * 1000)));
    ::kill(d.pid, SIGKILL);
    d.wait();
    bool done = journal_done(journal);
    std::string text = read_text(out);
    if (text.find("parasite running") != std::string::npos && text.find(" page(s) (") == std::string::npos)
      in_pages++;
    if (text.find("SIGPIPE") != std::string::npos) sigpipes++;
    std::string bad = done ? death_of(p.pid()) : "the journal is still there after 15 s";
    if (bad.empty()) {
      // Its threads and their stacks come and go: its fds must be the same,
      // nothing of ours mapped, no thread traced or stopped.
      Holdings now = holdings_of(p.pid());
      if (now.fds != before.fds) bad += difference(p.pid(), before, now) + " ";
      if (now.maps.find("minicriu") != std::string::npos) bad += "a mapping of ours is left: " + now.maps;
      for (auto& [tid, st] : now.threads)
        if (st != "tracer 0 runs") bad += fmt::format("thread {}: {} ", tid, st);
    }
    if (!bad.empty()) {
      problems++;
      report += fmt::format("kill {} after {:.0f} ms: {}\n{}\n", i, delay_ms, bad, text);
      if (!p.alive()) break;
    }
    clean_after(images, dir);
  }
  std::printf("[ kill walk ] %d kills over a dump of %.0f ms: %u while the pages were copied, %u with a SIGPIPE "
              "of ours taken away; %u problem(s)\n",
              kKills, dump_ms, in_pages, sigpipes, problems);
  EXPECT_EQ(problems, 0u) << report;
  EXPECT_GT(in_pages, 0u) << "no kill landed while the pages were copied (a dump of " << dump_ms << " ms)";
  ::kill(p.pid(), SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << read_text(dir / "generations.log");
  p.forget();
}

// The dump held at its first parasite command (parasite in, tree stopped).
void hold_dump_with_parasite_in(Tree& t, std::unique_ptr<Dumper>& d, pid_t& guardian) {
  std::string journal = journal_of(t.journals, t.root);
  d = std::make_unique<Dumper>(t.dump_args(), t.journals, t.dir / "held.out", "parasite-command:1:stall");
  auto deadline = Clock::now() + 20s;
  while (Clock::now() < deadline) {
    if (read_text(journal).find("\nparasite ") != std::string::npos) break;
    std::this_thread::sleep_for(5ms);
  }
  // Past the infection: the stall is in the first command, after it.
  std::this_thread::sleep_for(300ms);
  guardian = guardian_in(journal);
  ASSERT_GT(guardian, 0) << read_text(journal);
}

TEST(KillWalk, CheckCleanupPutsBackATreeWhoseGuardianDiedToo) {
  Tree t;
  ASSERT_NO_FATAL_FAILURE(t.start());
  std::string journal = journal_of(t.journals, t.root);
  std::unique_ptr<Dumper> d;
  pid_t guardian = -1;
  ASSERT_NO_FATAL_FAILURE(hold_dump_with_parasite_in(t, d, guardian));

  // A journal whose dumper runs is left alone.
  auto busy = run({"/usr/bin/env", "MINICRIU_JOURNAL_DIR=" + t.journals, minicriu_bin(), "check", "--cleanup"});
  EXPECT_EQ(busy.status, 0) << busy.output;
  EXPECT_NE(busy.output.find("left alone: its dumper (pid " + std::to_string(d->pid) + ") still runs"),
            std::string::npos) << busy.output;
  ASSERT_TRUE(std::filesystem::exists(journal));

  // Both die: the tree is held in its group stop, with our parasite in.
  ::kill(guardian, SIGKILL);
  ::kill(d->pid, SIGKILL);
  d->wait();
  // Its child: ours now (we are a subreaper).
  ASSERT_TRUE(wait_pid(guardian, 5000).has_value());
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(t.p.alive());
  EXPECT_TRUE(t.stopped()) << t.states();
  EXPECT_NE(read_text("/proc/" + std::to_string(t.root) + "/maps").find("minicriu-parasite"), std::string::npos);

  auto r = run({"/usr/bin/env", "MINICRIU_JOURNAL_DIR=" + t.journals, minicriu_bin(), "check", "--cleanup"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("dump-" + std::to_string(t.root) + ".journal: replayed: 2 process(es) put back"),
            std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(journal));
  EXPECT_EQ(t.problems(), "") << r.output << t.p.log();

  auto none = run({"/usr/bin/env", "MINICRIU_JOURNAL_DIR=" + t.journals, minicriu_bin(), "check", "--cleanup"});
  EXPECT_EQ(none.output, "no journal of a dead dump\n");
  clean_after(t.images, t.dir);
}

TEST(KillWalk, TheNextDumpReplaysTheJournalOfADeadOne) {
  Tree t;
  ASSERT_NO_FATAL_FAILURE(t.start());
  std::unique_ptr<Dumper> d;
  pid_t guardian = -1;
  ASSERT_NO_FATAL_FAILURE(hold_dump_with_parasite_in(t, d, guardian));
  ::kill(guardian, SIGKILL);
  ::kill(d->pid, SIGKILL);
  d->wait();
  // Its child: ours now (we are a subreaper).
  ASSERT_TRUE(wait_pid(guardian, 5000).has_value());
  EXPECT_TRUE(t.stopped()) << t.states();

  clean_after(t.images, t.dir);
  Dumper next(t.dump_args(), t.journals, t.dir / "next.out");
  EXPECT_EQ(next.wait(), 0) << read_text(t.dir / "next.out");
  EXPECT_NE(read_text(t.dir / "next.out").find("an earlier dump of it died midway; its journal was replayed"),
            std::string::npos) << read_text(t.dir / "next.out");
  ASSERT_TRUE(journal_done(journal_of(t.journals, t.root)));
  EXPECT_EQ(t.problems(), "") << t.p.log();
  clean_after(t.images, t.dir);
}
