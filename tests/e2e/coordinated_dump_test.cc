// The coordinated dump's two phases on one machine, with an agent that runs
// the command here (the two-node job itself is two_node_test.cc): both trees
// dumped and killed only when both are ready, brought back by
// restore-nodes; a node that fails leaves the other's tree running; a node
// that hears no word, or whose tree needs a destructive step, fails alone,
// leaving its tree as it was.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

// `agent HOST COMMAND`: the command, here, whatever the host.
std::string local_agent(const TempDir& dir) {
  std::string path = dir / "agent";
  std::ofstream(path) << "#!/bin/sh\nshift\nexec sh -c \"$*\"\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

std::vector<std::string> dump_nodes(const std::string& agent, const std::vector<std::string>& nodes) {
  std::vector<std::string> args{"dump-nodes", "--agent", agent, "--minicriu", minicriu_bin()};
  for (auto& n : nodes) args.insert(args.end(), {"--node", n});
  return args;
}

}  // namespace

TEST(CoordinatedDump, BothTreesAreKilledOnlyOnceBothAreReadyAndComeBackTogether) {
  TempDir dir;
  std::string agent = local_agent(dir);
  Program one("basic", dir), two("intact", dir);
  ASSERT_TRUE(one.wait_ready());
  ASSERT_TRUE(two.wait_ready());
  std::string img1 = images_dir(dir, "one"), img2 = images_dir(dir, "two");

  // A node that cannot dump: the other's tree runs on, its images gone.
  auto refused = run_minicriu(dump_nodes(agent, {fmt::format("here:{}:{}", one.pid(), img1),
                                                 fmt::format("there:{}:{}", 4000000, img2)}));
  expect_one_line_error(refused, "coordinated dump: node there: ");
  EXPECT_NE(refused.output.find("no tree was killed"), std::string::npos) << refused.output;
  EXPECT_TRUE(one.alive());
  EXPECT_FALSE(std::filesystem::exists(img1 + "/inventory.img"));

  auto dumped = run_minicriu(dump_nodes(agent, {fmt::format("here:{}:{}", one.pid(), img1),
                                                fmt::format("there:{}:{}", two.pid(), img2)}));
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_NE(dumped.output.find("here: 1 process(es)"), std::string::npos) << dumped.output;
  EXPECT_NE(dumped.output.find("there: 1 process(es)"), std::string::npos) << dumped.output;
  EXPECT_EQ(one.wait_exit().value_or(-1), 128 + SIGKILL);
  EXPECT_EQ(two.wait_exit().value_or(-1), 128 + SIGKILL);
  RestoredTree tree;
  tree.add_from(img1);
  tree.add_from(img2);
  auto restored = run_minicriu({"restore-nodes", "--agent", agent, "--minicriu", minicriu_bin(), "--node",
                                "here:" + img1, "--node", "there:" + img2});
  ASSERT_EQ(restored.status, 0) << restored.output;
  for (auto& images : {img1, img2}) {
    pid_t pid = static_cast<pid_t>(show_json(images).inventory().root_pid());
    EXPECT_NE(restored.output.find(fmt::format(": {}", pid)), std::string::npos) << restored.output;
    ::kill(pid, SIGUSR1);
    EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
  }
}

// Without its word (the coordinator gone: stdin ends) a ready node gives up,
// and its tree runs on unharmed.
TEST(CoordinatedDump, ANodeWithoutTheCoordinatorsWordLeavesItsTreeRunning) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--coordinated"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("minicriu-coordinated: ready\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("minicriu: error: the coordinator went away before its word; the tree runs on"),
            std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  expect_intact(p);
}

// Accepting a connection to read what its client sent cannot be undone if
// the coordinator then says no: a coordinated dump refuses it first.
TEST(CoordinatedDump, ATreeWhoseDumpWouldBeDestructiveIsRefused) {
  TempDir dir;
  Program p("tcppending", dir, {"tree"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir), "--coordinated"});
  expect_one_line_error(r, "so a coordinated dump refuses it; let the application accept them");
  expect_intact(p);
}
