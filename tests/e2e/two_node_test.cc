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
#include "mpi_job.hpp"

using namespace e2e;

#ifdef MPI_RING_BIN

namespace {

constexpr int kRanks = 4;  // two a node
constexpr int kIterations = 400;

CommandResult sh(const std::string& command) { return run({"/bin/sh", "-c", command}); }

// Two nodes, "nodea" and "nodeb": a network namespace each, joined by a veth
// pair on 10.77.0.0/24, and the agent that reaches them. Names carry our pid:
// other test runs may share the machine.
class TwoNodes {
 public:
  explicit TwoNodes(const TempDir& dir) : agent_(dir / "agent") {
    std::string id = std::to_string(::getpid());
    ns_[0] = "mc" + id + "a", ns_[1] = "mc" + id + "b";
    auto made = sh(fmt::format("ip netns add {0} && ip netns add {1} && "
                               "ip link add {0}v type veth peer name {1}v && "
                               "ip link set {0}v netns {0} && ip link set {1}v netns {1} && "
                               "ip -n {0} addr add 10.77.0.1/24 dev {0}v && ip -n {1} addr add 10.77.0.2/24 dev {1}v && "
                               "ip -n {0} link set {0}v up && ip -n {1} link set {1}v up && "
                               "ip -n {0} link set lo up && ip -n {1} link set lo up 2>&1",
                               ns_[0], ns_[1]));
    made_ = true;
    if (made.status != 0) {
      why_ = made.output.substr(0, made.output.find('\n'));
      return;
    }
    for (auto& ns : ns_) {
      std::filesystem::create_directories("/etc/netns/" + ns);
      std::ofstream("/etc/netns/" + ns + "/hosts") << "127.0.0.1 localhost\n10.77.0.1 nodea\n10.77.0.2 nodeb\n";
    }
    // `agent [-f] HOST COMMAND`: COMMAND (one string, for a shell, as ssh
    // takes it) on HOST, in the foreground with our stdio, or with -f in the
    // background as `ssh -f` would (how mpirun starts orted here).
    std::ofstream(agent_) << fmt::format(R"(#!/bin/sh
detach=; [ "$1" = -f ] && {{ detach=1; shift; }}
host=$1; shift
case "$host" in nodea) ns={0};; nodeb) ns={1};; *) echo "agent: no node $host" >&2; exit 255;; esac
on_node() {{ exec ip netns exec $ns unshare --uts sh -c 'hostname "$1"; shift; exec "$@"' agent "$host" "$@"; }}
[ -n "$detach" ] && on_node setsid -f sh -c "$*" </dev/null >>{2}/$host.log 2>&1
on_node sh -c "$*"
)", ns_[0], ns_[1], dir.path());
    ::chmod(agent_.c_str(), 0755);
    ok_ = true;
  }
  ~TwoNodes() {
    if (!made_) return;
    // Whatever still runs on a node goes with it.
    for (auto& ns : ns_) sh(fmt::format("ip netns pids {0} 2>/dev/null | xargs -r kill -9; rm -rf /etc/netns/{0}", ns));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    reap_zombies();
    for (auto& ns : ns_) sh(fmt::format("ip netns del {} 2>/dev/null", ns));
  }
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  const std::string& agent() const { return agent_; }
  // The network namespace of node i, as /proc/PID/ns/net names it.
  std::string net_ns(int i) const {
    struct stat st {};
    ::stat(("/run/netns/" + ns_[i]).c_str(), &st);
    return fmt::format("net:[{}]", st.st_ino);
  }

 private:
  std::string ns_[2];
  std::string agent_;
  bool made_ = false, ok_ = false;
  std::string why_;
};

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The job: the agent runs mpirun on node A (in a session of its own); the
// pid returned is the root of node A's tree.
pid_t start_job(const TempDir& dir, const TwoNodes& nodes) {
  std::string mpirun = fmt::format(
      "{} -np {} --host nodea:2,nodeb:2 --mca plm_rsh_agent {} --mca oob_tcp_if_include 10.77.0.0/24 "
      "--mca btl_tcp_if_include 10.77.0.0/24 --mca btl self,vader,tcp {} {} {}",
      MPIRUN_BIN, kRanks, quoted(nodes.agent() + " -f"), MPI_RING_BIN, kIterations, dir / "progress");
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

int progress_of(const TempDir& dir) {
  std::ifstream in(dir / "progress");
  int it = 0;
  in >> it;
  return it;
}

bool wait_progress(const TempDir& dir, int at_least) {
  for (int i = 0; i < 9000 && progress_of(dir) < at_least; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return progress_of(dir) >= at_least;
}

// The root of node B's tree: the session leader the agent started, orted's
// parent (the shell that runs it, as sshd's would on a real node).
pid_t node_b_root(const TwoNodes& nodes) {
  std::string net = nodes.net_ns(1);
  for (int i = 0; i < 500; i++) {
    for (auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      if (read_text(e.path().string() + "/comm") != "orted\n") continue;
      std::error_code ec;
      if (std::filesystem::read_symlink(e.path() / "ns/net", ec).string() != net) continue;
      std::string stat = read_text(e.path().string() + "/stat");
      int ppid = 0, pgrp = 0, sid = 0;
      std::sscanf(stat.c_str() + stat.rfind(')') + 2, "%*c %d %d %d", &ppid, &pgrp, &sid);
      return sid == ppid ? ppid : std::stoi(name);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

}  // namespace

TEST(TwoNodes, AJobOverTwoNodesCheckpointedByOneCoordinatedDumpEndsWithTheSameAnswer) {
  TempDir dir;
  TwoNodes nodes(dir);
  if (!nodes.ok()) GTEST_SKIP() << "network namespaces cannot be made here: " << nodes.why();
  pid_t a = start_job(dir, nodes);
  ASSERT_TRUE(wait_progress(dir, 60)) << read_text(dir / "err");
  pid_t b = node_b_root(nodes);
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
  int after_refusal = progress_of(dir);
  ASSERT_TRUE(wait_progress(dir, after_refusal + 20)) << "the job stopped after a refused dump";

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
  int at_dump = progress_of(dir);
  EXPECT_LT(at_dump, kIterations);

  auto restored = run_minicriu({"restore-nodes", "--agent", nodes.agent(), "--minicriu", minicriu_bin(), "--node",
                                "nodea:" + images_a, "--node", "nodeb:" + images_b});
  ASSERT_EQ(restored.status, 0) << restored.output;
  EXPECT_NE(restored.output.find(fmt::format("nodea: {}", a)), std::string::npos) << restored.output;
  EXPECT_NE(restored.output.find(fmt::format("nodeb: {}", b)), std::string::npos) << restored.output;
  EXPECT_EQ(wait_pid(a, 120000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), mpi_ring_answer(kRanks, kIterations) + "\n") << read_text(dir / "err");
}

#endif
