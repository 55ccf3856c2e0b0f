// Every command's --help shows every option with an example, and the manual
// page (minicriu --man) is made from the same text.
#include <gtest/gtest.h>

#include <signal.h>

#include <sstream>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

// The options of a --help text, each with its whole description.
std::vector<std::string> option_entries(const std::string& help) {
  std::vector<std::string> out;
  std::istringstream in(help);
  std::string line;
  while (std::getline(in, line) && line.rfind("Options:", 0) != 0) {
  }
  // Up to the footer: an entry starts with "  -", its description may go on
  // on the lines below.
  while (std::getline(in, line) && (line.empty() || line[0] == ' ')) {
    if (line.rfind("  -", 0) == 0)
      out.push_back(line);
    else if (!out.empty())
      out.back() += line;
  }
  return out;
}

}  // namespace

TEST(Cli, EveryOptionOfEveryCommandShowsAnExample) {
  for (std::string cmd : {"dump", "pre-dump", "restore", "show", "coredump", "dump-nodes", "restore-nodes"}) {
    SCOPED_TRACE(cmd);
    auto r = run_minicriu({cmd, "--help"});
    ASSERT_EQ(r.status, 0) << r.output;
    auto entries = option_entries(r.output);
    EXPECT_GE(entries.size(), 3u) << r.output;
    for (auto& e : entries) {
      if (e.find("--help") != std::string::npos) continue;
      EXPECT_NE(e.find("Example: "), std::string::npos) << e;
    }
    EXPECT_NE(r.output.find("Examples:\n  minicriu " + cmd), std::string::npos) << r.output;
  }
}

TEST(Cli, TheManualPageHasEveryCommandAndOption) {
  auto man = run_minicriu({"--man"});
  ASSERT_EQ(man.status, 0) << man.output;
  EXPECT_EQ(man.output.rfind(".TH MINICRIU 1", 0), 0u) << man.output;
  for (std::string cmd : {"dump", "restore", "show", "coredump", "check"})
    EXPECT_NE(man.output.find(".SS \"minicriu " + cmd + "\""), std::string::npos) << cmd;
  for (std::string opt : {"\\-\\-ghost\\-limit", "\\-\\-backtrace", "\\-\\-output\\-dir", "\\-\\-progress\\-after",
                          "\\-\\-inherit\\-fd", "\\-\\-json"})
    EXPECT_NE(man.output.find(opt), std::string::npos) << opt;
  EXPECT_EQ(man.output.find("\\-\\-man"), std::string::npos) << "the hidden flag is not documented";
}

// A CRIU recipe runs as it is: the options minicriu needs none for are
// accepted, CRIU's -o, --pidfile, -W and -v0..-v4 mean what they mean there.
TEST(Cli, CriuRecipesRunWithTheirOptions) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  auto left = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images_dir(dir, "left"), "-R",
                            "--link-remap", "--ghost-fiemap", "--skip-in-flight", "-l", "-W", dir.path(), "-o",
                            "left.log", "-v4", "--pidfile", "left.pid"});
  ASSERT_EQ(left.status, 0) << left.output;
  EXPECT_NE(read_text(dir / "left.log").find(") debug: "), std::string::npos) << read_text(dir / "left.log");
  EXPECT_EQ(read_text(dir / "left.pid"), std::to_string(pid) + "\n");
  EXPECT_EQ(left.output.find(") info : "), std::string::npos) << "the log went to the file: " << left.output;
  expect_intact(p);
}

TEST(Cli, CriuRestoreOptionsAreAcceptedAndItsLevelsMeanWhatTheyMeanThere) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  auto dumped = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images, "--no-ghost-fiemap",
                              "--file-locks", "-v0", "-o", dir / "dump.log"});
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  ASSERT_TRUE(wait_gone(pid));
  EXPECT_EQ(read_text(dir / "dump.log"), "") << "-v0: errors only";
  RestoredTree restored;
  restored.add_from(images);
  auto r = run_minicriu({"restore", "-d", "-D", images, "--tcp-established", "--ext-unix-sk", "--shell-job",
                         "--file-locks", "--link-remap", "-v3", "-W", dir.path(), "--log-file", "restore.log",
                         "--pidfile", "restore.pid"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_text(dir / "restore.pid"), std::to_string(pid) + "\n");
  std::string log = read_text(dir / "restore.log");
  EXPECT_NE(log.find(") info : "), std::string::npos) << log;
  EXPECT_EQ(log.find(") debug: "), std::string::npos) << "-v3: no details\n" << log;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "basic.log");
}

// A CRIU option minicriu has not: one line naming it, and what instead.
TEST(Cli, ACriuOptionMinicriuDoesNotHaveIsOneLineNamingIt) {
  auto r = run_minicriu({"dump", "-t", "1", "-D", "/nonexistent", "--leave-stopped"});
  expect_one_line_error(r, "dump: --leave-stopped is an option of CRIU's that minicriu does not support: ");
  r = run_minicriu({"restore", "-D", "/nonexistent", "--manage-cgroups=soft"});
  expect_one_line_error(r, "restore: --manage-cgroups is an option of CRIU's that minicriu does not support: ");
  r = run_minicriu({"dump", "-t", "1", "-D", "/nonexistent", "-s"});
  expect_one_line_error(r, "dump: -s (--leave-stopped) is an option of CRIU's that minicriu does not support: ");
}
