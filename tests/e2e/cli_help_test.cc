// Every command's --help shows every option with an example, and the manual
// page (minicriu --man) is made from the same text.
#include <gtest/gtest.h>

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
