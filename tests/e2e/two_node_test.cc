// A job over two nodes on one machine, checkpointed as a whole by one
// coordinated dump: two network namespaces joined by a veth pair, each node
// with its own UTS name and its hosts in /etc/netns/NS/hosts (which `ip netns
// exec` puts in place of /etc/hosts), an rsh agent that runs a command "on"
// a node with `ip netns exec NS unshare --uts`. mpirun on node A starts orted
// on node B through that agent; the ranks talk over TCP between the nodes
// and over shared memory within each. `minicriu dump-nodes` dumps both
// nodes' trees at once (their connections between nodes with TCP_REPAIR,
// each node's network lock kept until its own restore), refusing as a whole
// when one node fails; `minicriu restore-nodes` brings both back, and the
// job ends with the answer of an undisturbed run.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "e2e_util.hpp"
#include "mpi_job.hpp"  // tests/mpi

using namespace e2e;

#ifdef MPI_RING_BIN

namespace {

constexpr int kNodeRanks = 4;  // two a node
constexpr int kNodeIterations = 400;

// The job: the agent runs mpirun on node A (in a session of its own); the
// pid returned is the root of node A's tree.
pid_t start_job(const TempDir& dir, const mpi_job::TwoNodes& nodes) {
  std::string mpirun = nodes.mpirun_command(MPIRUN_BIN, MPI_RING_BIN, kNodeRanks, kNodeIterations, dir / "progress");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open((dir / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0), ::dup2(out, 1), ::dup2(err, 2);
    ::close_range(3, ~0u, 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    ::execl(nodes.agent().c_str(), "agent", "nodea", mpirun.c_str(), nullptr);
    ::_exit(127);
  }
  return pid;
}

}  // namespace

TEST(TwoNodes, AJobOverTwoNodesCheckpointedByOneCoordinatedDumpEndsWithTheSameAnswer) {
  TempDir dir;
  mpi_job::TwoNodes nodes(dir.path());
  if (!nodes.ok()) GTEST_SKIP() << "network namespaces cannot be made here: " << nodes.why();
  pid_t a = start_job(dir, nodes);
  ASSERT_TRUE(mpi_job::wait_progress(dir / "progress", 60)) << read_text(dir / "err");
  pid_t b = nodes.node_b_root();
  ASSERT_GT(b, 0) << "no orted on node B";
  std::string images_a = images_dir(dir, "nodea"), images_b = images_dir(dir, "nodeb");
  auto node_args = [&](const std::string& dir_b) {
    return std::vector<std::string>{"dump-nodes", "--agent", nodes.agent(), "--minicriu", minicriu_bin(),
                                    "--node", fmt::format("nodea:{}:{}", a, images_a),
                                    "--node", fmt::format("nodeb:{}:{}", b, dir_b), "--", "--tcp-established"};
  };

  // One node fails: the other, frozen with its images ready, is told no and
  // runs on; the job goes on.
  auto refused = run_minicriu(node_args(dir / "no-such-dir"));
  expect_one_line_error(refused, "coordinated dump: node nodeb: image directory");
  EXPECT_NE(refused.output.find("no tree was killed: every node's tree runs on"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(images_a + "/inventory.img"));
  int after_refusal = mpi_job::progress(dir / "progress");
  ASSERT_TRUE(mpi_job::wait_progress(dir / "progress", after_refusal + 20)) << "the job stopped after a refused dump";

  auto dumped = run_minicriu(node_args(images_b));
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_NE(dumped.output.find("all nodes dumped in"), std::string::npos) << dumped.output;
  EXPECT_EQ(wait_pid(a), 128 + SIGKILL);
  RestoredTree tree;
  for (auto& images : {images_a, images_b}) {
    auto view = show_json(images);
    EXPECT_FALSE(view.inventory().network_lock_table().empty())
        << images << ": connections between nodes need a lock kept until the restore";
    for (auto& p : view.processes()) {
      reap_zombies();
      EXPECT_TRUE(wait_gone(static_cast<pid_t>(p.pstree().pid()))) << p.pstree().pid();
    }
    tree.add_from(images);
  }
  int at_dump = mpi_job::progress(dir / "progress");
  EXPECT_LT(at_dump, kNodeIterations);

  auto restored = run_minicriu({"restore-nodes", "--agent", nodes.agent(), "--minicriu", minicriu_bin(), "--node",
                                "nodea:" + images_a, "--node", "nodeb:" + images_b});
  ASSERT_EQ(restored.status, 0) << restored.output;
  EXPECT_NE(restored.output.find(fmt::format("nodea: {}", a)), std::string::npos) << restored.output;
  EXPECT_NE(restored.output.find(fmt::format("nodeb: {}", b)), std::string::npos) << restored.output;
  EXPECT_EQ(wait_pid(a, 120000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), mpi_job::ring_answer(kNodeRanks, kNodeIterations) + "\n") << read_text(dir / "err");
}

#endif
