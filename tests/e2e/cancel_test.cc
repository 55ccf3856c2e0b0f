// SIGTERM, SIGINT and SIGHUP to minicriu while it dumps or restores
// (minicriu::Cancel, caught by the CLI): a dump stops, cures its parasite and
// releases the tree, which runs on as it was (tests/programs/intact.c checks
// itself: fds, mappings, signal mask, pending signals); a restore whose tree
// does not run yet kills what it made, and the images restore afterwards.
// The exit status is 128 + the signal, after one line naming it.
//
// The dump or restore is held at one step while the signal comes: by a
// parasite that hangs (MINICRIU_FAULT=parasite-stall) or by a step that
// waits until cancelled (MINICRIU_FAULT=STEP:N:stall, base/fault.hpp).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "e2e_util.hpp"
#include "minicriu/minicriu.h"

using namespace e2e;
using Clock = std::chrono::steady_clock;

namespace {

// minicriu with MINICRIU_FAULT=fault, its output into a file, in the
// background.
class Minicriu {
 public:
  Minicriu(const TempDir& dir, const std::string& fault, const std::vector<std::string>& args)
      : out_(dir / "minicriu.out") {
    std::vector<std::string> argv{"/usr/bin/env", "MINICRIU_FAULT=" + fault, "MINICRIU_PARASITE_TIMEOUT_MS=20000",
                                  minicriu_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      int null = ::open("/dev/null", O_RDONLY);
      if (fd < 0 || null < 0) ::_exit(126);
      ::dup2(null, 0), ::dup2(fd, 1), ::dup2(fd, 2);
      ::close_range(3, ~0u, 0);
      std::vector<char*> c;
      for (auto& a : argv) c.push_back(a.data());
      c.push_back(nullptr);
      ::execv(c[0], c.data());
      ::_exit(127);
    }
  }
  ~Minicriu() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  std::string output() const { return read_text(out_); }
  // Waits until its output holds needle.
  bool wait_for(const std::string& needle, int timeout_ms = 10000) const {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      if (output().find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  // Its exit status (128 + signal if killed), and how long it took.
  CommandResult wait(int timeout_ms = 10000) {
    CommandResult r;
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    int st = 0;
    while (Clock::now() < deadline) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.output = output();
    return r;
  }

 private:
  std::string out_;
  pid_t pid_ = -1;
};


// An error naming the signal, and the status of a death by it; one line
// unless the command logged its steps (-v).
void expect_cancelled(const CommandResult& r, int sig, const std::string& name, bool one_line = true) {
  EXPECT_EQ(r.status, 128 + sig) << r.output;
  EXPECT_NE(r.output.find("minicriu: error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cancelled by " + name), std::string::npos) << r.output;
  if (one_line) EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

// A dump of an intact program held by fault, given sig once ready_line is
// in its output (the dump then runs with -v), must leave the program as it
// was.
void dump_interrupted(const std::string& fault, const std::string& ready_line, int sig, const std::string& name) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  std::vector<std::string> args{"dump", "-t", std::to_string(p.pid()), "-D", images};
  if (!ready_line.empty()) args.insert(args.begin() + 1, "-v");
  Minicriu m(dir, fault, args);
  if (!ready_line.empty()) {
    ASSERT_TRUE(m.wait_for(ready_line)) << m.output();
  } else {
    // The hung parasite holds its socket in the target (before it, the
    // infection may hold other fds a moment).
    auto holds_socket = [&] {
      Holdings now = holdings_of(p.pid());
      if (now.fds.size() != before.fds.size() + 1) return false;
      for (auto& [fd, link] : now.fds)
        if (!before.fds.count(fd)) return link.starts_with("socket:[");
      return false;
    };
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!holds_socket() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(holds_socket()) << m.output();
  }
  auto t0 = Clock::now();
  ::kill(m.pid(), sig);
  CommandResult r = m.wait();
  // The cure of a parasite that does not answer waits a little for it.
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(6));
  expect_cancelled(r, sig, name, ready_line.empty());
  EXPECT_EQ(holdings_of(p.pid()), before);
  EXPECT_TRUE(std::filesystem::is_empty(images));
  expect_intact(p);
}

}  // namespace

TEST(Cancel, SigtermToADumpWithAHungParasiteLeavesTheTargetAsItWas) {
  dump_interrupted("parasite-stall", "", SIGTERM, "SIGTERM");
}

// The time of the first -v line holding needle, in seconds from the start
// of the command's log (-1: none).
double log_time(const std::string& out, const std::string& needle) {
  auto at = out.find(needle);
  if (at == std::string::npos) return -1;
  auto line = out.rfind("\n", at);
  line = line == std::string::npos ? 0 : line + 1;
  return std::atof(out.c_str() + line + 1);  // "( 0.123456) info : ..."
}

// SIGTERM while the pages of a 160 MiB process go through the page lanes'
// pipes (the parasite vmsplicing them, the dumper's workers splicing them
// into the lane files), at delays spread over the dump's page phase: each
// time the dump stops with the signal's status (or was done already), the
// process holds the fds it held, nothing of ours mapped, no thread traced
// or stopped; at the end it verifies every page.
TEST(Cancel, SigtermWhileThePagesGoThroughThePipesLeavesTheProcessIntact) {
  TempDir dir;
  Program p("generations", dir, {"40960", "20000"});
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  std::string pid = std::to_string(p.pid()), images = images_dir(dir);
  auto whole = run_minicriu({"-v", "dump", "-R", "-t", pid, "-D", images});
  ASSERT_EQ(whole.status, 0) << whole.output;
  if (whole.output.find("vmsplice'd by the parasite into") == std::string::npos)
    GTEST_SKIP() << "no page lanes here (one CPU)";
  double from = log_time(whole.output, ": parasite running"), to = log_time(whole.output, " page(s) (");
  ASSERT_GT(from, 0) << whole.output;
  ASSERT_GT(to, from) << whole.output;
  std::filesystem::remove_all(images);
  std::filesystem::create_directories(images);
  constexpr int kSignals = 6;
  unsigned in_pages = 0;
  double slowest_ms = 0;
  for (int i = 0; i < kSignals; i++) {
    Minicriu m(dir, "", {"-v", "dump", "-R", "-t", pid, "-D", images});
    // The command's start (exec, its log's zero) is not counted: a little late.
    double delay = from + (to - from) * (i + 0.5) / kSignals;
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(delay * 1e6)));
    auto t0 = Clock::now();
    ::kill(m.pid(), SIGTERM);
    CommandResult r = m.wait();
    // The parasite is let finish its batch into nothing and answers the
    // cure: no wait for one that does not answer.
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    slowest_ms = std::max(slowest_ms, ms);
    EXPECT_LT(ms, 6000) << r.output;
    if (r.status != 0) {
      expect_cancelled(r, SIGTERM, "SIGTERM", false);
      if (r.output.find(": parasite running") != std::string::npos &&
          r.output.find(" page(s) (") == std::string::npos)
        in_pages++;
    }
    Holdings now = holdings_of(p.pid());
    EXPECT_EQ(now.fds, before.fds) << r.output;
    EXPECT_EQ(now.maps.find("minicriu"), std::string::npos) << now.maps;
    for (auto& [tid, st] : now.threads) EXPECT_EQ(st, "tracer 0 runs") << tid << "\n" << r.output;
    std::filesystem::remove_all(images);
    std::filesystem::create_directories(images);
  }
  std::printf("[ cancel  ] %d SIGTERMs over the page phase (%.0f ms): %u while the pages were copied; the slowest "
              "ended %.0f ms after its signal\n",
              kSignals, (to - from) * 1000, in_pages, slowest_ms);
  EXPECT_GT(in_pages, 0u);
  ::kill(p.pid(), SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << read_text(dir / "generations.log");
  p.forget();
}

TEST(Cancel, SigintToADumpHeldAtARemoteSyscallLeavesTheTargetAsItWas) {
  // The 2nd remote syscall of the infection: its memfd is in the target.
  dump_interrupted("remote-syscall:2:stall", "stalls until cancelled", SIGINT, "SIGINT");
}

TEST(Cancel, SighupToADumpHeldInAKindPhaseLeavesTheTargetAsItWas) {
  // Once the whole tree is seen, its parasites cured, the tree still frozen.
  dump_interrupted("check/pipe:1:stall", "stalls until cancelled", SIGHUP, "SIGHUP");
}

TEST(Cancel, SigtermToARestoreKillsWhatItMadeAndTheImagesRestoreAfter) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  p.forget();
  RestoredTree restored;
  restored.add_from(images);
  {
    // The process is made and waits for the word to go.
    Minicriu m(dir, "restore/go:1:stall", {"restore", "-v", "-D", images});
    ASSERT_TRUE(m.wait_for("stalls until cancelled")) << m.output();
    EXPECT_TRUE(pid_exists(pid));
    ::kill(m.pid(), SIGTERM);
    CommandResult r = m.wait();
    EXPECT_EQ(r.status, 128 + SIGTERM) << r.output;
    EXPECT_NE(r.output.find("minicriu: error: cancelled by SIGTERM"), std::string::npos) << r.output;
  }
  EXPECT_TRUE(wait_gone(pid, 5000)) << "the restore left pid " << pid << " alive";
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "intact.log");
}

TEST(Cancel, SigtermToARestoreThatWaitsForItsTreeIsPassedOnToTheRoot) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  p.forget();
  RestoredTree restored;
  restored.add_from(images);
  Minicriu m(dir, "", {"restore", "-v", "-D", images});
  ASSERT_TRUE(m.wait_for("restored pid")) << m.output();
  // The tree runs: SIGTERM is the tree's, as a shell's would be (intact's
  // default action for it: death).
  ::kill(m.pid(), SIGTERM);
  CommandResult r = m.wait();
  EXPECT_EQ(r.status, 128 + SIGTERM) << r.output;
  EXPECT_TRUE(wait_gone(pid, 5000));
}

TEST(Cancel, TheCAbiCancelStopsADumpAtItsFirstStep) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  minicriu_cancel* cancel = minicriu_cancel_new();
  minicriu_dump_opts* opts = minicriu_dump_opts_new();
  ASSERT_TRUE(cancel && opts);
  ASSERT_EQ(minicriu_dump_opts_set_pid(opts, p.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(opts, images.c_str()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_cancel(opts, cancel), 0);
  // As a runtime's signal handler would, before (or while) the dump runs.
  minicriu_cancel_request(cancel, SIGTERM);
  EXPECT_EQ(minicriu_dump(opts), -1);
  EXPECT_NE(std::string(minicriu_last_error()).find("cancelled by SIGTERM"), std::string::npos)
      << minicriu_last_error();
  minicriu_dump_opts_free(opts);
  minicriu_cancel_free(cancel);
  EXPECT_EQ(holdings_of(p.pid()), before);
  EXPECT_TRUE(std::filesystem::is_empty(images));
  expect_intact(p);
}
