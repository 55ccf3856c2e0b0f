// A coordinated checkpoint of a job over several nodes (minicriu.hpp,
// coordinated_dump()): the coordinator's side and the node's side of one
// small protocol, on the node's stdout and stdin as the agent (rsh, ssh)
// carries them:
//
//   node -> "minicriu-coordinated: ready"      images synced, tree frozen
//   coordinator -> "go" or "no"                 once every node is ready, or
//                                               as soon as one failed
//   node -> "minicriu-coordinated: done K=V..." its stats, then it exits 0
//
// Two phases, so that a failure anywhere leaves every tree running: no node
// kills its tree before every node has its images; a node that hears "no",
// hears nothing in time, or loses its coordinator fails its dump as any
// failed dump does (images removed, tree released).
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <sstream>

#include "base/error.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"

extern char** environ;

namespace minicriu {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kPrefix = "minicriu-coordinated: ";

// One word for a POSIX shell, as ssh hands the command to the node's.
std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Status write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    // A socket or a pipe: MSG_NOSIGNAL where it is a socket, so a peer gone
    // is an error and not our SIGPIPE.
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("write");
    text.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// ---- one agent process per node ------------------------------------------

// `AGENT... HOST COMMAND` with its stdin a socket of ours (so a word to a
// node that is gone fails instead of raising SIGPIPE here) and its stdout and
// stderr pipes to us.
struct NodeRun {
  std::string host;
  pid_t pid = -1;
  UniqueFd word, out, err;
  std::string out_buf, err_text;
  bool exited = false;
  int status = -1;
  Clock::time_point started;
  uint64_t ns = 0;

  NodeRun() = default;
  NodeRun(NodeRun&& o) noexcept
      : host(std::move(o.host)), pid(std::exchange(o.pid, -1)), word(std::move(o.word)), out(std::move(o.out)),
        err(std::move(o.err)), out_buf(std::move(o.out_buf)), err_text(std::move(o.err_text)), exited(o.exited),
        status(o.status), started(o.started), ns(o.ns) {}
  NodeRun& operator=(NodeRun&&) = delete;
  ~NodeRun() {
    // Only on an early return: the agent is not left behind as a zombie.
    if (pid > 0 && !exited) {
      word.reset();
      int st;
      (void)::waitpid(pid, &st, 0);
    }
  }

  // The last line it wrote on stderr ("minicriu: error: " taken off), for
  // the one line the caller sees.
  std::string said() const {
    std::string t = err_text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    auto nl = t.rfind('\n');
    std::string last = nl == std::string::npos ? t : t.substr(nl + 1);
    constexpr std::string_view kError = "minicriu: error: ";
    if (last.starts_with(kError)) last = last.substr(kError.size());
    if (!last.empty()) return last;
    if (WIFEXITED(status)) return fmt::format("it exited with status {} and said nothing", WEXITSTATUS(status));
    return fmt::format("it was killed by signal {}", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
  bool ok() const { return exited && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

Result<NodeRun> start_on_node(const std::vector<std::string>& agent, const std::string& host,
                              const std::vector<std::string>& command) {
  if (agent.empty()) return fail("no agent to reach the nodes with (ssh, or the job's rsh agent)");
  std::string line;
  for (auto& w : command) line += (line.empty() ? "" : " ") + shell_quote(w);
  std::vector<std::string> words = agent;
  words.push_back(host);
  words.push_back(line);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);

  int sv[2], out[2], err[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return fail_errno("socketpair");
  NodeRun run;
  run.host = host;
  run.word.reset(sv[0]);
  UniqueFd their_in(sv[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) return fail_errno("pipe");
  run.out.reset(out[0]);
  UniqueFd their_out(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return fail_errno("pipe");
  run.err.reset(err[0]);
  UniqueFd their_err(err[1]);

  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, their_in.get(), STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, their_out.get(), STDOUT_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, their_err.get(), STDERR_FILENO);
  int r = ::posix_spawnp(&run.pid, argv[0], &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (r != 0) return std::unexpected(Error(fmt::format("cannot start the agent {} for node {}", agent[0], host), r));
  run.started = Clock::now();
  return run;
}

// Reads what the nodes wrote, for at most timeout_ms; each complete line of
// a node's stdout goes to on_line. A node whose stdout and stderr ended is
// waited for.
void pump(std::vector<NodeRun>& nodes, int timeout_ms,
          const std::function<void(NodeRun&, const std::string&)>& on_line) {
  std::vector<pollfd> fds;
  std::vector<std::pair<NodeRun*, bool>> whose;  // node, is stdout
  for (auto& n : nodes) {
    if (n.out) fds.push_back({n.out.get(), POLLIN, 0}), whose.push_back({&n, true});
    if (n.err) fds.push_back({n.err.get(), POLLIN, 0}), whose.push_back({&n, false});
  }
  if (!fds.empty() && ::poll(fds.data(), fds.size(), timeout_ms) > 0) {
    for (size_t i = 0; i < fds.size(); i++) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto [n, is_out] = whose[i];
      char buf[4096];
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        (is_out ? n->out : n->err).reset();
        continue;
      }
      if (!is_out) {
        n->err_text.append(buf, static_cast<size_t>(got));
        if (n->err_text.size() > 65536) n->err_text.erase(0, n->err_text.size() - 65536);
        continue;
      }
      n->out_buf.append(buf, static_cast<size_t>(got));
      for (size_t nl; (nl = n->out_buf.find('\n')) != std::string::npos;) {
        std::string line = n->out_buf.substr(0, nl);
        n->out_buf.erase(0, nl + 1);
        on_line(*n, line);
      }
    }
  } else if (fds.empty()) {
    ::usleep(static_cast<useconds_t>(std::min(timeout_ms, 20)) * 1000);
  }
  for (auto& n : nodes) {
    if (n.exited || n.out || n.err) continue;
    while (::waitpid(n.pid, &n.status, 0) < 0 && errno == EINTR) {
    }
    n.exited = true;
    n.ns = ns_since(n.started);
    if (!n.out_buf.empty()) on_line(n, std::exchange(n.out_buf, std::string()));
  }
}

bool all_exited(const std::vector<NodeRun>& nodes) {
  for (auto& n : nodes)
    if (!n.exited) return false;
  return true;
}

// "done processes=2 threads=5 ..." -> the stats.
DumpStats parse_done(const std::string& rest) {
  DumpStats s;
  std::istringstream in(rest);
  for (std::string kv; in >> kv;) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string k = kv.substr(0, eq);
    uint64_t v = std::strtoull(kv.c_str() + eq + 1, nullptr, 10);
    if (k == "processes") s.processes = static_cast<unsigned>(v);
    else if (k == "threads") s.threads = static_cast<unsigned>(v);
    else if (k == "vmas") s.vmas = v;
    else if (k == "pages") s.pages_dumped = v;
    else if (k == "page_bytes") s.page_bytes = v;
    else if (k == "frozen_ns") s.frozen_ns = v;
    else if (k == "total_ns") s.total_ns = v;
  }
  return s;
}

}  // namespace

// ---- the node's side -------------------------------------------------------

std::function<Status()> coordinated_node_gate(int in_fd, int out_fd, unsigned timeout_ms) {
  return [in_fd, out_fd, timeout_ms]() -> Status {
    TRY(with_context(write_all(out_fd, fmt::format("{}ready\n", kPrefix)), "telling the coordinator the node is ready"));
    std::string word;
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{in_fd, POLLIN, 0};
      int r = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
      if (r < 0 && errno == EINTR) continue;
      if (r == 0)
        return failf("no word from the coordinator within {} ms of the images being ready; the tree runs on "
                     "(--coordinated-timeout sets the wait)", timeout_ms);
      char c;
      ssize_t n = ::read(in_fd, &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail("the coordinator went away before its word; the tree runs on");
      if (c == '\n') break;
      word += c;
    }
    if (word == "go") return {};
    return fail("the coordinator said no (another node's dump failed); the tree runs on");
  };
}

void coordinated_node_report(int out_fd, const DumpStats& s) {
  (void)write_all(out_fd, fmt::format("{}done processes={} threads={} vmas={} pages={} page_bytes={} frozen_ns={} "
                                      "total_ns={}\n", kPrefix, s.processes, s.threads, s.vmas, s.pages_dumped,
                                      s.page_bytes, s.frozen_ns, s.total_ns));
}

// ---- the coordinator -----------------------------------------------------

Result<CoordinatedDumpStats> coordinated_dump(const CoordinatedDumpOptions& options) {
  Logger log(options.log);
  auto start = Clock::now();
  if (options.nodes.empty()) return fail("a coordinated dump needs at least one node");
  std::vector<NodeRun> nodes;
  nodes.reserve(options.nodes.size());  // on_line keys by address
  std::set<const NodeRun*> ready;
  std::map<const NodeRun*, DumpStats> stats;
  for (auto& n : options.nodes) {
    std::vector<std::string> cmd{options.minicriu, "dump", "-t", std::to_string(n.pid), "-D", n.images_dir,
                                 "--coordinated", "--coordinated-timeout", std::to_string(options.word_timeout_ms)};
    if (options.leave_running) cmd.push_back("--leave-running");
    cmd.insert(cmd.end(), options.dump_args.begin(), options.dump_args.end());
    auto run = start_on_node(options.agent, n.host, cmd);
    if (!run) {
      // The nodes started already hear no from their stdin's end.
      return std::unexpected(run.error().context("coordinated dump: every node's tree was left running"));
    }
    log.info("node {}: dumping pid {} into {}", n.host, n.pid, n.images_dir);
    nodes.push_back(std::move(*run));
  }
  auto on_line = [&](NodeRun& n, const std::string& line) {
    if (!line.starts_with(kPrefix)) return;
    std::string rest = line.substr(kPrefix.size());
    if (rest == "ready") {
      ready.insert(&n);
      log.info("node {}: images synced, tree frozen, waiting for the word", n.host);
    } else if (rest.starts_with("done")) {
      stats[&n] = parse_done(rest.substr(4));
    }
  };

  // Phase one: every node ready, or one failed (or the wait ran out).
  std::string failure;
  for (;;) {
    pump(nodes, 100, on_line);
    // No word was sent yet: a node that ended failed (before it was ready,
    // or gave up waiting).
    for (auto& n : nodes)
      if (failure.empty() && n.exited) failure = fmt::format("node {}: {}", n.host, n.said());
    if (!failure.empty()) break;
    if (ready.size() == nodes.size()) break;
    if (ns_since(start) > uint64_t{options.ready_timeout_ms} * 1'000'000) {
      for (auto& n : nodes)
        if (!ready.count(&n)) {
          failure = fmt::format("node {}: not ready within {} ms", n.host, options.ready_timeout_ms);
          break;
        }
      break;
    }
  }
  // Phase two: the same word for all.
  bool go = failure.empty();
  log.info("coordinated dump: {}", go ? "every node is ready; go" : failure + "; telling every node no");
  for (auto& n : nodes) {
    if (!n.exited) (void)write_all(n.word.get(), go ? "go\n" : "no\n");
    n.word.reset();
  }
  while (!all_exited(nodes)) pump(nodes, 100, on_line);

  if (!go)
    return failf("coordinated dump: {}; no tree was killed: every node's tree runs on and its images were "
                 "removed", failure);
  CoordinatedDumpStats out;
  std::string late;
  for (auto& n : nodes) {
    if (!n.ok() || !stats.count(&n)) {
      late += fmt::format("{}node {}: {}", late.empty() ? "" : "; ", n.host, n.ok() ? "no report" : n.said());
      continue;
    }
    out.nodes.push_back({n.host, stats[&n]});
    out.frozen_ns = std::max(out.frozen_ns, stats[&n].frozen_ns);
  }
  // After the word, what is left of a dump (killing its tree) cannot fail
  // for want of anything; this names what did anyway.
  if (!late.empty())
    return failf("coordinated dump: after every node was ready and told to go on, {}; the other nodes' dumps "
                 "completed", late);
  out.total_ns = ns_since(start);
  return out;
}

Result<CoordinatedRestoreResult> coordinated_restore(const CoordinatedRestoreOptions& options) {
  Logger log(options.log);
  auto start = Clock::now();
  if (options.nodes.empty()) return fail("a coordinated restore needs at least one node");
  std::vector<NodeRun> nodes;
  nodes.reserve(options.nodes.size());
  std::map<const NodeRun*, std::string> last_line;
  for (auto& n : options.nodes) {
    std::vector<std::string> cmd{options.minicriu, "restore", "-d", "-D", n.images_dir};
    cmd.insert(cmd.end(), options.restore_args.begin(), options.restore_args.end());
    ASSIGN_OR_RETURN(auto run, with_context(start_on_node(options.agent, n.host, cmd),
                                            fmt::format("coordinated restore of node {}", n.host)));
    log.info("node {}: restoring {}", n.host, n.images_dir);
    nodes.push_back(std::move(run));
  }
  for (auto& n : nodes) n.word.reset();
  auto on_line = [&](NodeRun& n, const std::string& line) {
    if (!line.empty()) last_line[&n] = line;
  };
  while (!all_exited(nodes)) pump(nodes, 100, on_line);
  CoordinatedRestoreResult out;
  std::string failed, running;
  for (auto& n : nodes) {
    pid_t root = n.ok() ? static_cast<pid_t>(std::atoi(last_line[&n].c_str())) : 0;
    if (root <= 0) {
      failed += fmt::format("{}node {}: {}", failed.empty() ? "" : "; ", n.host, n.said());
      continue;
    }
    running += (running.empty() ? "" : ", ") + n.host;
    out.nodes.push_back({n.host, root, n.ns});
    log.info("node {}: pid {} runs again ({} ms)", n.host, root, n.ns / 1'000'000);
  }
  if (!failed.empty())
    return failf("coordinated restore: {}; {}", failed,
                 running.empty() ? "no node's tree was restored" : "restored and running: " + running);
  out.total_ns = ns_since(start);
  return out;
}

}  // namespace minicriu
