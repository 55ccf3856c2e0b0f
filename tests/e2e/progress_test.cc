// Progress of the page path: a dump and a restore run under a pseudo-terminal
// draw one line redrawn (bytes, rate, time left), plain log lines when stderr
// is not a terminal, and the same figures reach a library caller's progress
// callback, through the C ABI, in the calling process.
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "e2e_util.hpp"
#include "minicriu/minicriu.h"

using namespace e2e;

namespace {

// Runs minicriu with a pseudo-terminal as its stdin, stdout and stderr, and
// returns everything it wrote there and its exit code.
CommandResult run_on_pty(const std::vector<std::string>& args) {
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid == 0) {
    ::close_range(3, ~0u, 0);
    std::vector<std::string> argv{minicriu_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (auto& a : argv) cargs.push_back(const_cast<char*>(a.c_str()));
    cargs.push_back(nullptr);
    ::execv(cargs[0], cargs.data());
    ::_exit(127);
  }
  CommandResult r;
  char buf[4096];
  for (;;) {
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, 30000) <= 0) break;
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO: the last holder of the slave is gone
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

struct Reports {
  std::vector<minicriu_progress> all;
  std::vector<std::string> phases;
};

void on_progress(const minicriu_progress* p, void* arg) {
  auto* r = static_cast<Reports*>(arg);
  r->all.push_back(*p);
  r->phases.emplace_back(p->phase);
  r->all.back().phase = nullptr;  // valid during the call only
}

void expect_a_whole_transfer(const Reports& r, const std::string& phase, pid_t pid, uint64_t at_least) {
  ASSERT_FALSE(r.all.empty());
  uint64_t last = 0;
  for (size_t i = 0; i < r.all.size(); i++) {
    EXPECT_EQ(r.phases[i], phase);
    EXPECT_EQ(r.all[i].pid, pid);
    EXPECT_GE(r.all[i].bytes_done, last) << "progress went back";
    last = r.all[i].bytes_done;
    EXPECT_EQ(r.all[i].finished, i + 1 == r.all.size() ? 1 : 0);
  }
  EXPECT_GE(r.all.back().bytes_done, at_least);
  EXPECT_GT(r.all.back().bytes_per_s, 0);
}

}  // namespace

TEST(Progress, ADumpAndARestoreOnATerminalRedrawOneLine) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  // 32 MiB move in well under a second here: the threshold shows them anyway.
  auto dump = run_on_pty({"dump", "-t", std::to_string(pid), "-D", images, "--progress-after", "0"});
  ASSERT_EQ(dump.status, 0) << dump.output;
  std::string line = "\r\033[Kdump pid " + std::to_string(pid) + ": ";
  EXPECT_NE(dump.output.find(line), std::string::npos) << dump.output;
  EXPECT_NE(dump.output.find("/s"), std::string::npos) << dump.output;
  EXPECT_NE(dump.output.find("done in"), std::string::npos) << dump.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  RestoredTree restored;
  restored.add_from(images);
  auto restore = run_on_pty({"restore", "-d", "-D", images, "--progress-after", "0"});
  ASSERT_EQ(restore.status, 0) << restore.output;
  EXPECT_NE(restore.output.find("\r\033[Krestore pid " + std::to_string(pid) + ": "), std::string::npos)
      << restore.output;
  EXPECT_NE(restore.output.find("done in"), std::string::npos) << restore.output;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "basic.log");
}

TEST(Progress, WithoutATerminalItIsLogLines) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-v", "-t", std::to_string(p.pid()), "-D", images, "-R", "--progress-after", "0"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("info : dump pid " + std::to_string(p.pid()) + ": "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\033[K"), std::string::npos) << r.output;
  // Without -v, and under the threshold, nothing: a dump says nothing when all is well.
  auto quiet = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"});
  ASSERT_EQ(quiet.status, 0) << quiet.output;
  EXPECT_EQ(quiet.output, "");
  expect_intact(p);
}

TEST(Progress, TheCAbiCallbackSeesTheDumpAndTheRestore) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  Reports dumped;
  minicriu_dump_opts* d = minicriu_dump_opts_new();
  minicriu_dump_opts_set_pid(d, pid);
  minicriu_dump_opts_set_images_dir(d, images.c_str());
  ASSERT_EQ(minicriu_dump_opts_set_progress(d, on_progress, &dumped, 0), 0);
  // Setting the log afterwards keeps the progress callback.
  minicriu_dump_opts_set_log(d, MINICRIU_LOG_WARN, nullptr, nullptr);
  int rc = minicriu_dump(d);
  minicriu_dump_opts_free(d);
  ASSERT_EQ(rc, 0) << minicriu_last_error();
  expect_a_whole_transfer(dumped, "dump", pid, 32u << 20);
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();

  RestoredTree restored;
  restored.add_from(images);
  uint64_t page_bytes = show_json(images).summary().page_image_bytes();
  Reports back;
  minicriu_restore_opts* r = minicriu_restore_opts_new();
  minicriu_restore_opts_set_images_dir(r, images.c_str());
  minicriu_restore_opts_set_detach(r, 1);
  ASSERT_EQ(minicriu_restore_opts_set_progress(r, on_progress, &back, 0), 0);
  pid_t root = 0;
  rc = minicriu_restore(r, &root, nullptr);
  minicriu_restore_opts_free(r);
  ASSERT_EQ(rc, 0) << minicriu_last_error();
  EXPECT_EQ(root, pid);
  expect_a_whole_transfer(back, "restore", pid, page_bytes);
  EXPECT_EQ(back.all.back().bytes_done, page_bytes);
  EXPECT_EQ(back.all.back().bytes_total, page_bytes);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "basic.log");
}
