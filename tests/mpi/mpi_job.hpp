// The MPI job of the acceptance tests and benchmarks (tests/mpi/mpi_ring.c):
// the answer of an undisturbed run, and two nodes on one machine for a job
// over both (tests/e2e/two_node_test.cc, bench/mpi_bench.cc).
#pragma once

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace mpi_job {

// What mpi_ring prints at the end of an undisturbed run: the sum over
// iterations and ranks of (rank+1)(it+1)/2, and the tokens (each iteration's
// comes back as it + 1 + ... + (ranks-1)).
inline std::string ring_answer(int ranks, int iterations) {
  double total = 0.5 * (ranks * (ranks + 1) / 2) * (iterations * (iterations + 1) / 2.0);
  long tokens = static_cast<long>(iterations) * (iterations - 1) / 2 +
                static_cast<long>(iterations) * (ranks * (ranks - 1) / 2);
  return fmt::format("answer {:.1f} tokens {}", total, tokens);
}

// The iteration rank 0 reached, from its progress file.
inline int progress(const std::string& path) {
  std::ifstream in(path);
  int it = 0;
  in >> it;
  return it;
}

inline bool wait_progress(const std::string& path, int at_least, int timeout_ms = 90000) {
  for (int i = 0; i < timeout_ms / 10 && progress(path) < at_least; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return progress(path) >= at_least;
}

// A shell command's status and the first line it printed.
inline std::pair<int, std::string> shell(const std::string& command) {
  std::string line;
  FILE* f = ::popen((command + " 2>&1").c_str(), "r");
  if (!f) return {-1, "popen failed"};
  char buf[512];
  if (std::fgets(buf, sizeof buf, f)) line = buf;
  while (std::fgets(buf, sizeof buf, f)) {
  }
  int st = ::pclose(f);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return {st, line};
}

// Two nodes on one machine, "nodea" and "nodeb": a network namespace each,
// joined by a veth pair on 10.77.0.0/24, each with its hosts file in
// /etc/netns/NS/hosts (which `ip netns exec` puts in place of /etc/hosts),
// and an rsh agent that reaches them: `agent [-f] HOST COMMAND` runs COMMAND
// (one string for a shell, as ssh takes it) on HOST with `ip netns exec NS
// unshare --uts` under HOST's name, in the foreground with the caller's
// stdio, or with -f in the background as `ssh -f` would. Names carry our
// pid: other runs may share the machine.
class TwoNodes {
 public:
  explicit TwoNodes(const std::string& dir) : agent_(dir + "/agent") {
    std::string id = std::to_string(::getpid());
    ns_[0] = "mc" + id + "a", ns_[1] = "mc" + id + "b";
    auto [status, said] = shell(fmt::format(
        "ip netns add {0} && ip netns add {1} && ip link add {0}v type veth peer name {1}v && "
        "ip link set {0}v netns {0} && ip link set {1}v netns {1} && "
        "ip -n {0} addr add 10.77.0.1/24 dev {0}v && ip -n {1} addr add 10.77.0.2/24 dev {1}v && "
        "ip -n {0} link set {0}v up && ip -n {1} link set {1}v up && "
        "ip -n {0} link set lo up && ip -n {1} link set lo up", ns_[0], ns_[1]));
    made_ = true;
    if (status != 0) {
      why_ = said.empty() ? "ip netns add failed" : said;
      return;
    }
    for (auto& ns : ns_) {
      std::filesystem::create_directories("/etc/netns/" + ns);
      std::ofstream("/etc/netns/" + ns + "/hosts") << "127.0.0.1 localhost\n10.77.0.1 nodea\n10.77.0.2 nodeb\n";
    }
    std::ofstream(agent_) << fmt::format(R"(#!/bin/sh
detach=; [ "$1" = -f ] && {{ detach=1; shift; }}
host=$1; shift
case "$host" in nodea) ns={0};; nodeb) ns={1};; *) echo "agent: no node $host" >&2; exit 255;; esac
on_node() {{ exec ip netns exec $ns unshare --uts sh -c 'hostname "$1"; shift; exec "$@"' agent "$host" "$@"; }}
[ -n "$detach" ] && on_node setsid -f sh -c "$*" </dev/null >>{2}/$host.log 2>&1
on_node sh -c "$*"
)", ns_[0], ns_[1], dir);
    ::chmod(agent_.c_str(), 0755);
    ok_ = true;
  }
  TwoNodes(const TwoNodes&) = delete;
  TwoNodes& operator=(const TwoNodes&) = delete;
  // Whatever still runs on a node goes with it.
  ~TwoNodes() {
    if (!made_) return;
    for (auto& ns : ns_) shell(fmt::format("ip netns pids {0} | xargs -r kill -9; rm -rf /etc/netns/{0}", ns));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (auto& ns : ns_) shell(fmt::format("ip netns del {}", ns));
  }
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  const std::string& agent() const { return agent_; }

  // mpirun's command line on node A for a job of `ranks` (half a node) that
  // starts orted on node B through the agent; the traffic between nodes on
  // the veth subnet.
  std::string mpirun_command(const std::string& mpirun, const std::string& ring, int ranks, int iterations,
                             const std::string& progress) const {
    return fmt::format("{} -np {} --host nodea:{},nodeb:{} --mca plm_rsh_agent '{} -f' "
                       "--mca oob_tcp_if_include 10.77.0.0/24 --mca btl_tcp_if_include 10.77.0.0/24 "
                       "--mca btl self,vader,tcp {} {} {}",
                       mpirun, ranks, ranks / 2, ranks - ranks / 2, agent_, ring, iterations, progress);
  }

  // The root of node B's tree: the session leader the agent started, orted's
  // parent (the shell that runs it, as sshd's would on a real node); -1 if
  // no orted runs there.
  pid_t node_b_root(int timeout_ms = 5000) const {
    struct stat st {};
    ::stat(("/run/netns/" + ns_[1]).c_str(), &st);
    std::string net = fmt::format("net:[{}]", st.st_ino);
    for (int i = 0; i < timeout_ms / 10; i++) {
      for (auto& e : std::filesystem::directory_iterator("/proc")) {
        std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream comm(e.path() / "comm");
        std::string c;
        std::getline(comm, c);
        std::error_code ec;
        if (c != "orted" || std::filesystem::read_symlink(e.path() / "ns/net", ec).string() != net) continue;
        std::ifstream statf(e.path() / "stat");
        std::string text((std::istreambuf_iterator<char>(statf)), {});
        int ppid = 0, pgrp = 0, sid = 0;
        std::sscanf(text.c_str() + text.rfind(')') + 2, "%*c %d %d %d", &ppid, &pgrp, &sid);
        return sid == ppid ? ppid : std::stoi(name);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

 private:
  std::string ns_[2];
  std::string agent_;
  bool made_ = false, ok_ = false;
  std::string why_;
};

}  // namespace mpi_job
