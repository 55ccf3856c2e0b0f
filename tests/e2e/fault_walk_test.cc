// The fault walk: MINICRIU_FAULT=STEP:N (src/base/fault.hpp) makes the N-th
// occurrence of one step of a dump or a restore fail. A first run with
// MINICRIU_FAULT=count lists every step and how often it occurs; then the
// dump (or the restore) is run again with each step failing in turn, and each
// time:
//  - the command fails with one line naming the injected step;
//  - after a dump: every process of the tree holds exactly the fds and
//    mappings it held before (no parasite mapping, memfd, socket or pipe
//    left), no thread is traced or stopped, no nftables table of ours is
//    left, no image, temporary image or link remap, and the tree passes its
//    own verification (tests/programs/faultwalk.c, SIGUSR2);
//  - after a restore: no process of the tree is alive, nothing was created
//    beside the files (ghost files, link remaps) and no table is left.
// Then the tree is dumped (restored) for real and verifies itself.
//
// Every occurrence of every step is walked, except for the phases of the
// kinds that occur more than kEveryUpTo times (a kind's take_vma runs once
// per mapping, its observe_fd once per fd): of those, the first, the middle
// and the last. The counts are printed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_util.hpp"
#include "net/network_lock.hpp"

using namespace e2e;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kEveryUpTo = 4;
constexpr size_t kReportedProblems = 8;

using StepCounts = std::map<std::string, uint64_t>;

// "fault step STEP:N" lines of a count run: the highest N of each step.
StepCounts parse_counts(const std::string& output) {
  StepCounts counts;
  std::istringstream in(output);
  std::string line;
  const std::string tag = "fault step ";
  while (std::getline(in, line)) {
    auto at = line.find(tag);
    if (at == std::string::npos) continue;
    std::string step = line.substr(at + tag.size());
    auto colon = step.rfind(':');
    if (colon == std::string::npos) continue;
    uint64_t n = std::stoull(step.substr(colon + 1));
    auto& c = counts[step.substr(0, colon)];
    c = std::max(c, n);
  }
  return counts;
}

// PHASE/KIND: a phase of a kind at its call by KindSet, whose occurrences
// are one per fd or mapping (take/KIND and open/KIND are the kinds' own
// steps: each occurrence is walked).
bool is_kind_phase(const std::string& step) {
  auto slash = step.find('/');
  if (slash == std::string::npos) return false;
  std::string first = step.substr(0, slash);
  return first != "dump" && first != "restore" && first != "take" && first != "open";
}

std::vector<std::pair<std::string, uint64_t>> walk_plan(const StepCounts& counts) {
  std::vector<std::pair<std::string, uint64_t>> plan;
  for (auto& [step, n] : counts) {
    std::set<uint64_t> which;
    if (n <= kEveryUpTo || !is_kind_phase(step)) {
      for (uint64_t i = 1; i <= n; i++) which.insert(i);
    } else {
      which = {1, (n + 1) / 2, n};
    }
    for (uint64_t i : which) plan.emplace_back(step, i);
  }
  return plan;
}

uint64_t occurrences(const StepCounts& counts) {
  uint64_t n = 0;
  for (auto& [step, c] : counts) n += c;
  return n;
}

std::vector<std::string> fault_env(const std::string& spec) {
  return {"/usr/bin/env", "MINICRIU_FAULT=" + spec, minicriu_bin()};
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// What one failed command must look like; "" if it does.
std::string one_line_failure(const CommandResult& r, const std::string& step) {
  size_t lines = std::count(r.output.begin(), r.output.end(), '\n');
  if (r.status != 1 || lines != 1 || r.output.find("minicriu: error: ") == std::string::npos ||
      r.output.find("fault injected at step " + step) == std::string::npos)
    return "not one line naming the step (status " + std::to_string(r.status) + "): " + r.output;
  return "";
}

// Every process of the tree under root, root first.
std::vector<pid_t> tree_of(pid_t root) {
  std::vector<pid_t> pids{root};
  for (size_t i = 0; i < pids.size(); i++) {
    std::string dir = "/proc/" + std::to_string(pids[i]) + "/task";
    std::error_code ec;
    for (auto& t : std::filesystem::directory_iterator(dir, ec)) {
      std::istringstream in(read_text(t.path().string() + "/children"));
      pid_t c;
      while (in >> c) pids.push_back(c);
    }
  }
  return pids;
}


std::string describe_difference(pid_t pid, const Holdings& before, const Holdings& after) {
  std::string out = "pid " + std::to_string(pid) + ":";
  if (after.fds != before.fds) {
    out += " fds";
    for (auto& [fd, link] : after.fds)
      if (!before.fds.count(fd) || before.fds.at(fd) != link) out += " +" + std::to_string(fd) + "=" + link;
    for (auto& [fd, link] : before.fds)
      if (!after.fds.count(fd)) out += " -" + std::to_string(fd);
  }
  if (after.maps != before.maps) out += " maps changed";
  if (after.threads != before.threads) {
    out += " threads";
    for (auto& [tid, s] : after.threads) out += " " + tid + ":" + s;
  }
  return out;
}

// Names in a directory, recursively, with minicriu's prefix for our tables.
std::set<std::string> files_under(const std::string& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) names.insert(e.path().string());
  return names;
}

std::vector<std::string> our_tables(pid_t pid) {
  std::vector<std::string> out;
  auto tables = minicriu::network_lock_tables();
  if (!tables) return {"(tables unreadable: " + tables.error().what() + ")"};
  std::string prefix = "minicriu-" + std::to_string(pid) + "-";
  for (auto& t : *tables)
    if (t.starts_with(prefix)) out.push_back(t);
  return out;
}

// Asks the tree to verify itself (SIGUSR2 to its root); "" if it passed.
std::string self_check(pid_t root, const TempDir& dir, unsigned& round) {
  round++;
  ::kill(root, SIGUSR2);
  std::string want = "verified " + std::to_string(round) + " ";
  auto deadline = Clock::now() + std::chrono::seconds(5);
  std::string got;
  while (Clock::now() < deadline) {
    got = read_text(dir / "faultwalk.verified");
    if (got.starts_with(want)) return got == want + "ok\n" ? "" : "its own checks failed: " + got;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return "no answer to its own check (last: " + got + ")";
}

// Problems, the first few reported in full.
struct Problems {
  size_t count = 0;
  std::string report;
  void add(const std::string& what) {
    if (count++ < kReportedProblems) report += what + "\n";
  }
};

pid_t read_pid(const std::string& output) {
  std::string out = output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto nl = out.rfind('\n');
  std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  return !last.empty() && std::isdigit(static_cast<unsigned char>(last[0])) ? std::stoi(last) : -1;
}

}  // namespace

TEST(FaultWalk, ProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("faultwalk", dir);
  ASSERT_TRUE(p.wait_ready());
  unsigned round = 0;
  EXPECT_EQ(self_check(p.pid(), dir, round), "") << p.log();
  EXPECT_EQ(self_check(p.pid(), dir, round), "") << p.log();
  expect_intact(p);
}

TEST(FaultWalk, MalformedFaultSpecsInjectNothing) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("faultwalk", dir);
  ASSERT_TRUE(p.wait_ready());
  for (std::string spec : {"remote-syscall:0", "remote-syscall:", ":3", "remote-syscall:x1", "bogus"}) {
    auto r = run(concat(fault_env(spec), {"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"}));
    EXPECT_EQ(r.status, 0) << spec << ": " << r.output;
  }
  unsigned round = 0;
  EXPECT_EQ(self_check(p.pid(), dir, round), "") << p.log();
  expect_intact(p);
}

// Every step of a dump of the faultwalk tree with mode (options after -R for
// the count run and each failed dump: {} a killing dump, {"-R",
// "--background"} a background one) fails in one line and leaves the tree
// as it was, every holding of every process, no file, no table.
void walk_dump_steps(Program& p, const TempDir& dir, const std::string& images, const std::vector<std::string>& mode,
                     unsigned& round) {
  pid_t root = p.pid();
  std::vector<pid_t> pids = tree_of(root);
  ASSERT_EQ(pids.size(), 2u);
  std::map<pid_t, Holdings> before;
  for (pid_t pid : pids) before[pid] = holdings_of(pid);
  auto t0 = Clock::now();
  std::vector<std::string> dump = concat({"dump", "-t", std::to_string(root), "-D", images}, mode);

  // The count run leaves the tree running and its images, which go.
  auto counted = run(concat(fault_env("count"), concat(dump, mode.empty() ? std::vector<std::string>{"-R", "-v"}
                                                                          : std::vector<std::string>{"-v"})));
  ASSERT_EQ(counted.status, 0) << counted.output;
  StepCounts counts = parse_counts(counted.output);
  ASSERT_FALSE(counts.empty()) << counted.output;
  for (auto& f : std::filesystem::directory_iterator(images)) std::filesystem::remove(f.path());
  // Its link remap too: each failed dump below makes it again and must take
  // it back.
  for (auto& f : std::filesystem::directory_iterator(dir.path()))
    if (f.path().filename().string().starts_with(".minicriu-link-")) std::filesystem::remove(f.path());
  ASSERT_EQ(self_check(root, dir, round), "") << p.log();
  std::set<std::string> files_before = files_under(dir.path());

  auto plan = walk_plan(counts);
  Problems problems;
  for (auto& [step, n] : plan) {
    std::string spec = step + ":" + std::to_string(n);
    auto r = run(concat(fault_env(spec), dump));
    if (auto bad = one_line_failure(r, spec); !bad.empty()) problems.add(spec + ": " + bad);
    for (pid_t pid : pids) {
      Holdings now = holdings_of(pid);
      if (!(now == before[pid])) problems.add(spec + ": " + describe_difference(pid, before[pid], now));
    }
    if (auto t = our_tables(root); !t.empty()) problems.add(spec + ": nftables table left: " + t.front());
    if (auto f = files_under(dir.path()); f != files_before) {
      std::string extra;
      for (auto& name : f)
        if (!files_before.count(name)) extra += " " + name;
      problems.add(spec + ": files left:" + extra);
      for (auto& name : f)
        if (!files_before.count(name)) std::filesystem::remove(name);
    }
    if (auto bad = self_check(root, dir, round); !bad.empty()) {
      problems.add(spec + ": the tree " + bad + "\n" + p.log());
      break;
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("[ fault walk ] dump%s: %zu steps, %llu occurrences, %zu walked, %zu problem(s), %.1f s\n",
              mode.empty() ? "" : " --background", counts.size(),
              static_cast<unsigned long long>(occurrences(counts)), plan.size(), problems.count, secs);
  EXPECT_EQ(problems.count, 0u) << problems.report;
}

TEST(FaultWalk, EveryDumpStepFailsCleanly) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("faultwalk", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t root = p.pid();
  std::vector<pid_t> pids = tree_of(root);
  unsigned round = 0;
  ASSERT_NO_FATAL_FAILURE(walk_dump_steps(p, dir, images, {}, round));
  std::vector<std::string> dump = {"dump", "-t", std::to_string(root), "-D", images};

  // And for real: the tree dies only now, and comes back whole.
  auto r = run_minicriu(dump);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  for (pid_t pid : pids) ASSERT_TRUE(wait_gone(pid));
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), root);
  EXPECT_EQ(self_check(root, dir, round), "") << read_text(dir / "faultwalk.log");
  ::kill(root, SIGUSR1);
  EXPECT_EQ(wait_pid(root).value_or(-1), 0) << read_text(dir / "faultwalk.log");
}

// The same for a background dump: its short stop before the freeze, its
// arming with the tree running, the freeze, the copy after the release.
TEST(FaultWalk, EveryBackgroundDumpStepFailsCleanly) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("faultwalk", dir);
  ASSERT_TRUE(p.wait_ready());
  unsigned round = 0;
  ASSERT_NO_FATAL_FAILURE(walk_dump_steps(p, dir, images, {"-R", "--background"}, round));
}

TEST(FaultWalk, EveryRestoreStepFailsCleanly) {
  auto t0 = Clock::now();
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("faultwalk", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t root = p.pid();
  std::vector<pid_t> pids = tree_of(root);
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(root, images, &p));
  p.forget();
  for (pid_t pid : pids) ASSERT_TRUE(wait_gone(pid));
  std::set<std::string> dumped_files = files_under(dir.path());
  std::vector<std::string> restore = {"restore", "-d", "-D", images};
  RestoredTree restored;
  restored.add_from(images);

  // The count run restores the tree, which checks itself and is killed.
  unsigned round = 0;
  {
    auto counted = run(concat(fault_env("count"), concat(restore, {"-v"})));
    ASSERT_EQ(counted.status, 0) << counted.output;
    ASSERT_EQ(read_pid(counted.output), root) << counted.output;
    EXPECT_EQ(self_check(root, dir, round), "") << read_text(dir / "faultwalk.log");
    StepCounts counts = parse_counts(counted.output);
    ASSERT_FALSE(counts.empty()) << counted.output;
    for (pid_t pid : tree_of(root)) ::kill(pid, SIGKILL);
    for (pid_t pid : pids) ASSERT_TRUE(wait_gone(pid));
    reap_zombies();
    // That restore removed the link remap the dump made (the file's other
    // name is in faultwalk.d): it is made again, as a new dump would.
    for (auto& name : dumped_files)
      if (!std::filesystem::exists(name) && name.find(".minicriu-link-") != std::string::npos)
        std::filesystem::create_hard_link(dir / "faultwalk.d/other", name);
    std::filesystem::remove(dir / "faultwalk.verified");
    std::set<std::string> files_before = files_under(dir.path());

    auto plan = walk_plan(counts);
    Problems problems;
    for (auto& [step, n] : plan) {
      std::string spec = step + ":" + std::to_string(n);
      auto r = run(concat(fault_env(spec), restore));
      if (auto bad = one_line_failure(r, spec); !bad.empty()) problems.add(spec + ": " + bad);
      for (pid_t pid : pids) {
        if (!wait_gone(pid, 3000)) {
          problems.add(spec + ": pid " + std::to_string(pid) + " of the restored tree is alive");
          ::kill(pid, SIGKILL);
          wait_gone(pid);
        }
      }
      reap_zombies();
      if (auto t = our_tables(root); !t.empty()) problems.add(spec + ": nftables table left: " + t.front());
      if (auto f = files_under(dir.path()); f != files_before) {
        std::string diff;
        for (auto& name : f)
          if (!files_before.count(name)) diff += " +" + name;
        for (auto& name : files_before)
          if (!f.count(name)) diff += " -" + name;
        problems.add(spec + ": files changed:" + diff);
        break;
      }
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("[ fault walk ] restore: %zu steps, %llu occurrences, %zu walked, %zu problem(s), %.1f s\n",
                counts.size(), static_cast<unsigned long long>(occurrences(counts)), plan.size(),
                problems.count, secs);
    EXPECT_EQ(problems.count, 0u) << problems.report;
  }

  // The same images restore after all that, and the tree is whole (a new
  // tree from the dump: its checks count from 1 again).
  round = 0;
  ASSERT_EQ(restore_detached(images), root);
  EXPECT_EQ(self_check(root, dir, round), "") << read_text(dir / "faultwalk.log");
  ::kill(root, SIGUSR1);
  EXPECT_EQ(wait_pid(root).value_or(-1), 0) << read_text(dir / "faultwalk.log");
}
