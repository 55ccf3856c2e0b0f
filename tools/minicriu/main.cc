// The minicriu command line: a thin client of libminicriu.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/version.hpp"
#include "minicriu/minicriu.hpp"

namespace {

minicriu::LogOptions log_options(int verbosity) {
  minicriu::LogOptions log;
  log.level = verbosity <= 0   ? minicriu::LogLevel::warn
              : verbosity == 1 ? minicriu::LogLevel::info
                               : minicriu::LogLevel::debug;
  log.progress = ::isatty(STDERR_FILENO) != 0;
  return log;
}

int report(const minicriu::Error& e) {
  std::fprintf(stderr, "minicriu: error: %s\n", e.what().c_str());
  return 1;
}

// "HOST:PID:DIR" (with_pid) or "HOST:DIR"; DIR may hold colons.
minicriu::Result<minicriu::NodeTree> parse_node(const std::string& spec, bool with_pid) {
  minicriu::NodeTree node;
  auto first = spec.find(':');
  auto second = with_pid && first != std::string::npos ? spec.find(':', first + 1) : first;
  if (first == 0 || second == std::string::npos || second + 1 >= spec.size())
    return std::unexpected(minicriu::Error(
        "--node " + spec + ": expected " + (with_pid ? "HOST:PID:DIR" : "HOST:DIR")));
  node.host = spec.substr(0, first);
  node.images_dir = spec.substr(second + 1);
  if (with_pid) {
    std::string pid = spec.substr(first + 1, second - first - 1);
    char* end = nullptr;
    long v = std::strtol(pid.c_str(), &end, 10);
    if (pid.empty() || *end != 0 || v <= 0)
      return std::unexpected(minicriu::Error("--node " + spec + ": " + pid + " is not a pid"));
    node.pid = static_cast<pid_t>(v);
  }
  return node;
}

// The agent as a shell would split it ("ssh -x"), without quotes.
std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char c : text + " ") {
    if (c != ' ' && c != '\t') w += c;
    else if (!w.empty()) words.push_back(std::move(w)), w.clear();
  }
  return words;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"minicriu: checkpoint and restore Linux process trees"};
  app.set_version_flag("--version", minicriu::kVersion);
  app.require_subcommand(1);
  int verbosity = 0;
  app.add_flag("-v,--verbose", verbosity,
               "More log lines on stderr: -v one line per step (info), -vv details (debug)");

  minicriu::DumpOptions dump;
  auto* dump_cmd = app.add_subcommand("dump", "Checkpoint the tree rooted at a process into a directory");
  dump_cmd->add_option("-t,--tree", dump.pid, "PID of the root of the tree to dump")->required();
  dump_cmd->add_option("-D,--images-dir", dump.images_dir,
                       "Directory to write the images to (must exist)")->required();
  dump_cmd->add_flag("-R,--leave-running", dump.leave_running,
                     "Leave the tree running after the dump (default: kill it once the "
                     "images are complete)");
  dump_cmd->add_option("--ghost-limit", dump.ghost_limit,
                       "Largest ghost file (open, no name left) whose data a dump carries, "
                       "counting allocated data only, e.g. 64M, 2G (default 1G)");
  dump_cmd->add_option("--ghost-policy", dump.ghost_policy,
                       "PATTERN:copy or PATTERN:fail for ghost files whose last path matches "
                       "the glob PATTERN, regardless of --ghost-limit; repeatable, first match "
                       "wins (e.g. '/tmp/ompi-*:copy')");
  dump_cmd->add_flag("--ext-unix-sk", dump.ext_unix_sk,
                     "Dump unix sockets whose peer is outside the tree (stream, seqpacket and "
                     "dgram) as external: at restore each needs --inherit-fd, except a dgram "
                     "socket whose peer has a path, which is connected to it again");
  dump_cmd->add_flag("--ext-pipes", dump.ext_pipes,
                     "Dump pipes and fifos that a process outside the tree holds too (a rank's "
                     "stdio) as external: at restore each needs --inherit-fd fd[N]:pipe:[INODE] "
                     "or the restore hook");
  dump_cmd->add_option("--external", dump.external,
                       "unix[INODE]: dump this one unix socket of the tree (its own inode, as a "
                       "refusal names it) as external although its peer is outside; pipe[INODE]: "
                       "the same for a pipe or fifo also held outside; tty[N]: "
                       "dump the terminal /dev/pts/N although its master is outside, to be "
                       "reopened by path at restore while that master still holds it; repeatable");
  dump_cmd->add_flag("-j,--shell-job", dump.shell_job,
                     "Accept every terminal /dev/pts/N of the tree whose master is outside it "
                     "(a job started from a shell), as --external tty[N] would: reopened by "
                     "path at restore while that master still holds it");
  dump_cmd->add_option("--network-lock", dump.network_lock,
                       "How TCP connections are held silent while the tree is frozen (and, for "
                       "peers outside the tree, until the restore): auto (nftables, else the "
                       "iptables commands), nftables (through libnftables, no command needed), "
                       "iptables, or skip (no lock); default auto. Rules live in a table of "
                       "minicriu's own, removed again after every dump");
  dump_cmd->add_flag("--tcp-established", dump.tcp_established,
                     "Dump TCP connections whose peer is outside the tree (restored with "
                     "TCP_REPAIR; the peer must keep the connection until the restore). "
                     "Connections with both ends in the tree need no option");
  dump_cmd->add_flag("--tcp-drop-pending", dump.tcp_drop_pending,
                     "Drop connections from outside the tree that wait to be accepted on a "
                     "listening socket of the tree (default: refuse the dump)");
  dump_cmd->add_flag("-v,--verbose", verbosity, "Same as the global -v");
  bool coordinated = false;
  unsigned coordinated_timeout_ms = 60000;
  dump_cmd->add_flag("--coordinated", coordinated,
                     "One node's dump of `minicriu dump-nodes` (which starts it through the agent): once "
                     "the images are synced, say so on stdout and keep the tree frozen until the word on "
                     "stdin, go or no (no, or none: the tree runs on and the images go)");
  dump_cmd->add_option("--coordinated-timeout", coordinated_timeout_ms,
                       "With --coordinated: how long to wait for the word, in ms (default 60000)");

  minicriu::CoordinatedDumpOptions dump_nodes;
  std::string nodes_agent = "ssh";
  std::vector<std::string> dump_node_specs;
  auto* dump_nodes_cmd = app.add_subcommand(
      "dump-nodes", "Checkpoint a job over several nodes at once, one dump per node started through the "
                    "job's rsh/ssh agent; every tree is left running if any node's dump fails");
  dump_nodes_cmd->add_option("--node", dump_node_specs,
                             "HOST:PID:DIR: the tree rooted at PID on HOST (mpirun's, an orted's) goes into "
                             "DIR there; repeatable")->required()->allow_extra_args(false);
  dump_nodes_cmd->add_option("--agent", nodes_agent,
                             "The command that runs a command on a node, as `AGENT HOST COMMAND` (the job's "
                             "--mca plm_rsh_agent; default ssh)");
  dump_nodes_cmd->add_option("--minicriu", dump_nodes.minicriu, "minicriu on the nodes (default: minicriu)");
  dump_nodes_cmd->add_flag("-R,--leave-running", dump_nodes.leave_running, "Leave every tree running");
  dump_nodes_cmd->add_option("--word-timeout", dump_nodes.word_timeout_ms,
                             "How long a ready node waits for the word to go on, in ms (default 60000)");
  dump_nodes_cmd->add_option("dump_options", dump_nodes.dump_args,
                             "After --: options for every node's dump (--tcp-established for the "
                             "connections between nodes, --ext-pipes...)");
  dump_nodes_cmd->add_flag("-v,--verbose", verbosity, "Same as the global -v");

  minicriu::CoordinatedRestoreOptions restore_nodes;
  std::vector<std::string> restore_node_specs;
  auto* restore_nodes_cmd = app.add_subcommand(
      "restore-nodes", "Restore a job checkpointed by dump-nodes: `minicriu restore -d` on every node at once");
  restore_nodes_cmd->add_option("--node", restore_node_specs, "HOST:DIR; repeatable")->required()->allow_extra_args(false);
  restore_nodes_cmd->add_option("--agent", nodes_agent, "As for dump-nodes (default ssh)");
  restore_nodes_cmd->add_option("--minicriu", restore_nodes.minicriu, "minicriu on the nodes (default: minicriu)");
  restore_nodes_cmd->add_option("restore_options", restore_nodes.restore_args,
                                "After --: options for every node's restore");
  restore_nodes_cmd->add_flag("-v,--verbose", verbosity, "Same as the global -v");

  minicriu::RestoreOptions restore;
  auto* restore_cmd = app.add_subcommand("restore", "Restore a tree from a directory of images");
  restore_cmd->add_option("-D,--images-dir", restore.images_dir, "Directory of the images")->required();
  restore_cmd->add_flag("-d,--detach", restore.detach,
                        "Print the root PID and return once the tree runs (default: wait for "
                        "the restored root and exit with its status)");
  restore_cmd->add_option("--ghost-dir", restore.ghost_dir,
                          "Directory to recreate ghost files in when the directory they "
                          "were in is gone (they are unlinked again once restored)");
  restore_cmd->add_option("--inherit-fd", restore.inherit_fds,
                          "fd[N]:socket:[INODE]: minicriu's fd N stands in for the external "
                          "socket INODE of the images (dumped with --ext-unix-sk or --external); "
                          "the restored processes get it in the socket's place; fd[N]:pipe:[INODE]: "
                          "fd N, an end of a pipe of the same direction, stands in for the external "
                          "pipe INODE (--ext-pipes); repeatable");
  restore_cmd->add_flag("-v,--verbose", verbosity, "Same as the global -v");

  minicriu::ShowOptions show;
  auto* show_cmd = app.add_subcommand("show", "Decode the images of a checkpoint");
  show_cmd->add_option("-D,--images-dir", show.images_dir, "Directory of the images")->required();
  show_cmd->add_flag("--json", show.json, "Print JSON for scripts instead of text");

  auto* check_cmd = app.add_subcommand(
      "check", "Probe what this kernel and these privileges support; exit 1 if a required "
               "feature is missing");

  CLI11_PARSE(app, argc, argv);

  if (dump_cmd->parsed()) {
    dump.log = log_options(verbosity);
    if (coordinated) dump.commit_gate = minicriu::coordinated_node_gate(STDIN_FILENO, STDOUT_FILENO, coordinated_timeout_ms);
    auto r = minicriu::dump(dump);
    if (!r) return report(r.error());
    if (coordinated) minicriu::coordinated_node_report(STDOUT_FILENO, *r);
    if (verbosity > 0)
      std::fprintf(stderr, "dumped %u process(es), %u thread(s), %.1f MiB of pages; frozen %.3f s\n",
                   r->processes, r->threads, static_cast<double>(r->page_bytes) / (1 << 20),
                   static_cast<double>(r->frozen_ns) / 1e9);
    return 0;
  }
  if (restore_cmd->parsed()) {
    restore.log = log_options(verbosity);
    auto r = minicriu::restore(restore);
    if (!r) return report(r.error());
    if (restore.detach) {
      std::printf("%d\n", r->root_pid);
      return 0;
    }
    int st = r->exit_status;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
  }
  if (dump_nodes_cmd->parsed() || restore_nodes_cmd->parsed()) {
    bool dumping = dump_nodes_cmd->parsed();
    std::vector<minicriu::NodeTree> nodes;
    for (auto& spec : dumping ? dump_node_specs : restore_node_specs) {
      auto node = parse_node(spec, dumping);
      if (!node) return report(node.error());
      nodes.push_back(*node);
    }
    std::vector<std::string> agent = split_words(nodes_agent);
    if (dumping) {
      dump_nodes.nodes = nodes;
      dump_nodes.agent = agent;
      dump_nodes.log = log_options(verbosity);
      auto r = minicriu::coordinated_dump(dump_nodes);
      if (!r) return report(r.error());
      for (auto& n : r->nodes)
        std::printf("%s: %u process(es), %.1f MiB of pages, frozen %.3f s\n", n.host.c_str(), n.stats.processes,
                    static_cast<double>(n.stats.page_bytes) / (1 << 20), static_cast<double>(n.stats.frozen_ns) / 1e9);
      std::printf("all nodes dumped in %.3f s\n", static_cast<double>(r->total_ns) / 1e9);
      return 0;
    }
    restore_nodes.nodes = nodes;
    restore_nodes.agent = agent;
    restore_nodes.log = log_options(verbosity);
    auto r = minicriu::coordinated_restore(restore_nodes);
    if (!r) return report(r.error());
    for (auto& n : r->nodes) std::printf("%s: %d\n", n.host.c_str(), n.root_pid);
    return 0;
  }
  if (check_cmd->parsed()) {
    auto r = minicriu::check();
    if (!r) return report(r.error());
    bool ok = true;
    for (auto& item : *r) {
      std::printf("%-4s %s: %s\n", item.ok ? "ok" : (item.required ? "FAIL" : "no"),
                  item.name.c_str(), item.detail.c_str());
      ok &= item.ok || !item.required;
    }
    return ok ? 0 : 1;
  }
  if (show_cmd->parsed()) {
    auto r = minicriu::show(show);
    if (!r) return report(r.error());
    std::fwrite(r->data(), 1, r->size(), stdout);
    return 0;
  }
  return 0;
}
