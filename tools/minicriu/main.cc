// The minicriu command line: a thin client of libminicriu. Every option says
// what it does and shows an example; `minicriu --man` prints the manual page
// made from the same text (installed as minicriu.1).
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/stubs/logging.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/version.hpp"
#include "criu_options.hpp"
#include "man_page.hpp"
#include "minicriu/cleanup.hpp"
#include "minicriu/minicriu.hpp"

namespace {

// The description of an option, and an example of its use.
std::string with_example(const std::string& what, const std::string& example) {
  return what + ". Example: " + example;
}

// What dump and restore share with CRIU's command line: a log file, a pid
// file, the directory they are relative to, CRIU's verbosity levels.
struct CommonOptions {
  std::string log_file;   // -o: the log goes there instead of stderr
  std::string pidfile;    // the root's pid is written there
  std::string work_dir;   // -W: where a relative log file or pid file is
  int criu_level = -1;    // --verbosity / -vN (0..4), -1: not given
  int log_fd = -1;        // the open log file

  std::string in_work_dir(const std::string& path) const {
    return work_dir.empty() || path.empty() || path[0] == '/' ? path : work_dir + "/" + path;
  }
};

// -o, --pidfile, -W and --verbosity on a command, CRIU's names and meanings.
void add_common(CLI::App* cmd, CommonOptions& common) {
  cmd->add_option("-o,--log-file", common.log_file,
                  with_example("Write the log to FILE instead of stderr (created or truncated; relative "
                               "to -W DIR if given); errors still go to stderr too", "-o dump.log"))
      ->type_name("FILE");
  cmd->add_option("--pidfile", common.pidfile,
                  with_example(cmd->get_name() != "restore"
                                   ? "Write the PID of the dumped tree's root to FILE (relative to -W DIR)"
                                   : "Write the PID of the restored root to FILE once the tree runs (relative "
                                     "to -W DIR)",
                               "--pidfile /run/job.pid"))
      ->type_name("FILE");
  cmd->add_option("-W,--work-dir", common.work_dir,
                  with_example("The directory a relative --log-file or --pidfile is in (CRIU's -W; the "
                               "images stay in -D DIR)", "-W /var/log/minicriu"))
      ->type_name("DIR");
  cmd->add_option("--verbosity", common.criu_level,
                  with_example("CRIU's log levels, also written -v0..-v4: 0 and 1 errors only, 2 warnings "
                               "(the default), 3 one line per step, 4 details",
                               "minicriu " + cmd->get_name() + " -v4 ..."))
      ->type_name("LEVEL")
      ->check(CLI::Range(0, 4));
}

// -v counts, or CRIU's level if one was given: -1 errors, 0 warnings, 1 info, 2 debug.
int effective_verbosity(int verbosity, const CommonOptions& common) {
  return common.criu_level >= 0 ? minicriu::cli::criu_level_to_verbosity(common.criu_level) : verbosity;
}

minicriu::LogOptions log_options(int verbosity, uint32_t progress_after_ms, int log_fd = -1) {
  minicriu::LogOptions log;
  log.level = verbosity < 0    ? minicriu::LogLevel::error
              : verbosity == 0 ? minicriu::LogLevel::warn
              : verbosity == 1 ? minicriu::LogLevel::info
                               : minicriu::LogLevel::debug;
  // On a terminal one line redrawn; in a log, lines (at -v).
  log.progress = ::isatty(STDERR_FILENO) != 0 && log_fd < 0;
  log.progress_after_ms = progress_after_ms;
  if (log_fd >= 0)
    log.sink = [log_fd](minicriu::LogLevel, std::string_view line) {
      std::string l(line);
      l += '\n';
      (void)!::write(log_fd, l.data(), l.size());
    };
  return log;
}

// SIGINT, SIGTERM and SIGHUP during a dump or a restore ask the library to
// stop (a dump cures and releases its tree first); the exit status is then
// 128 + the signal's number, as if it had killed us.
minicriu::Cancel cancel_by_signal;

void on_stop_signal(int sig) { cancel_by_signal.request(sig); }

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking wait returns and looks at the request
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

int report(const minicriu::Error& e, int log_fd = -1) {
  std::fprintf(stderr, "minicriu: error: %s\n", e.what().c_str());
  if (log_fd >= 0) {
    std::string l = "error: " + e.what() + "\n";
    (void)!::write(log_fd, l.data(), l.size());
  }
  if (int sig = cancel_by_signal.signal(); sig > 0) return 128 + sig;
  return 1;
}

// Opens the log file of -o; an error line if it cannot.
bool open_log(CommonOptions& common) {
  if (common.log_file.empty()) return true;
  std::string path = common.in_work_dir(common.log_file);
  // 0600, as the images: a log names paths, addresses and peers of the tree.
  common.log_fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (common.log_fd >= 0) return true;
  std::fprintf(stderr, "minicriu: error: --log-file %s: cannot create it: %s\n", path.c_str(), std::strerror(errno));
  return false;
}

// Writes --pidfile; an error line if it cannot.
bool write_pidfile(const CommonOptions& common, pid_t pid) {
  if (common.pidfile.empty()) return true;
  std::string path = common.in_work_dir(common.pidfile);
  FILE* f = std::fopen(path.c_str(), "w");
  bool ok = f && std::fprintf(f, "%d\n", static_cast<int>(pid)) > 0;
  if (f && std::fclose(f) != 0) ok = false;
  if (!ok) std::fprintf(stderr, "minicriu: error: --pidfile %s: cannot write it: %s\n", path.c_str(), std::strerror(errno));
  return ok;
}

// --page-server HOST:PORT, or CRIU's --page-server --address HOST --port N.
struct PageServerArgs {
  std::string spec;
  std::string address;
  unsigned port = 0;
  CLI::Option* flag = nullptr;
  CLI::Option* address_opt = nullptr;
  CLI::Option* port_opt = nullptr;

  // The HOST:PORT given, "" for none, or an error line.
  minicriu::Result<std::string> resolve() const {
    bool given = flag->count() > 0;
    bool parts = address_opt->count() > 0 || port_opt->count() > 0;
    if (!given && parts)
      return std::unexpected(minicriu::Error("--address and --port name a page server: give --page-server too"));
    if (!given) return std::string();
    if (!spec.empty()) {
      if (parts)
        return std::unexpected(minicriu::Error("--page-server " + spec + " with --address or --port: give one "
                                               "or the other"));
      return spec;
    }
    if (address_opt->count() == 0 || port_opt->count() == 0 || port == 0 || port > 65535)
      return std::unexpected(minicriu::Error("--page-server without HOST:PORT needs --address HOST and --port N "
                                             "(CRIU's form), or write --page-server HOST:PORT"));
    return (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" + std::to_string(port);
  }
};

void add_page_server(CLI::App* cmd, PageServerArgs& ps, const std::string& what, const std::string& example) {
  ps.flag = cmd->add_option("--page-server", ps.spec, with_example(what, example))
                ->expected(0, 1)
                ->type_name("HOST:PORT");
  ps.address_opt = cmd->add_option("--address", ps.address,
                                   with_example("With --page-server and --port (CRIU's form): the page server's "
                                                "host", "--page-server --address 10.0.0.2 --port 27027"))
                       ->type_name("HOST");
  ps.port_opt = cmd->add_option("--port", ps.port,
                                with_example("With --page-server and --address (CRIU's form): the page server's "
                                             "TCP port", "--page-server --address 10.0.0.2 --port 27027"))
                    ->type_name("N");
}

void add_verbose(CLI::App* cmd, int& verbosity) {
  cmd->add_flag("-v,--verbose", verbosity,
                with_example("More log lines on stderr: -v one line per step (info), -vv details (debug)",
                             "minicriu " + cmd->get_name() + " -v ..."));
}

void add_progress_after(CLI::App* cmd, uint32_t& ms) {
  cmd->add_option("--progress-after", ms,
                  with_example("Report the progress of the pages (bytes done, rate, time left; one line "
                               "redrawn on a terminal, log lines at -v otherwise) for transfers that last "
                               "longer than MS milliseconds (default 1000; 0: always)",
                               "--progress-after 0"))
      ->type_name("MS");
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

// The page server in this process, or (-d) in a daemon: this process returns
// once the daemon listens. Either prints "listening on ADDR:PORT pid PID".
int run_page_server(minicriu::PageServerOptions& options, bool daemon) {
  catch_stop_signals();
  ::signal(SIGPIPE, SIG_IGN);
  std::string shown = options.address.empty() ? "*" : options.address;
  if (!daemon) {
    options.on_listening = [&](uint16_t port) {
      std::printf("listening on %s:%u pid %d\n", shown.c_str(), port, static_cast<int>(::getpid()));
      std::fflush(stdout);
    };
    auto st = minicriu::page_server(options);
    if (!st) return report(st.error());
    return 0;
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    std::perror("minicriu: error: pipe");
    return 1;
  }
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("minicriu: error: fork");
    return 1;
  }
  if (child == 0) {
    ::close(p[0]);
    ::setsid();
    options.on_listening = [&](uint16_t port) {
      std::string line = "listening on " + shown + ":" + std::to_string(port) + " pid " +
                         std::to_string(::getpid()) + "\n";
      (void)!::write(p[1], line.data(), line.size());
      ::close(p[1]);
      int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) {
        ::dup2(null, STDIN_FILENO);
        ::dup2(null, STDOUT_FILENO);
        if (null > 2) ::close(null);
      }
    };
    auto st = minicriu::page_server(options);
    if (!st) return report(st.error());
    return 0;
  }
  ::close(p[1]);
  std::string line;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) line.append(buf, static_cast<size_t>(n));
  if (line.empty()) {  // it failed, and said why on stderr
    int st = 0;
    ::waitpid(child, &st, 0);
    return 1;
  }
  std::fputs(line.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A damaged image is reported by the engine in one line of its own;
  // protobuf's own complaint about it (invalid UTF-8...) would be a second.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  CLI::App app{"minicriu: checkpoint and restore Linux process trees"};
  app.set_version_flag("--version", minicriu::kVersion);
  app.footer(
      "Examples:\n"
      "  minicriu dump -t 1234 -D /tmp/ckpt           checkpoint the tree of pid 1234, killing it\n"
      "  minicriu restore -D /tmp/ckpt                restore it and wait for its root\n"
      "  minicriu show -D /tmp/ckpt --backtrace       where each of its threads was\n"
      "  minicriu coredump -D /tmp/ckpt --output-dir /tmp/cores\n"
      "Each command's options: minicriu COMMAND --help");
  bool man = false;
  app.add_flag("--man", man, "Print the manual page (troff) and exit")->group("");
  int verbosity = 0;
  app.add_flag("-v,--verbose", verbosity,
               with_example("More log lines on stderr: -v one line per step (info), -vv details (debug)",
                            "minicriu -v dump -t 1234 -D /tmp/ckpt"));

  minicriu::DumpOptions dump;
  uint32_t progress_after_ms = 1000;
  auto* dump_cmd = app.add_subcommand("dump", "Checkpoint the tree rooted at a process into a directory");
  dump_cmd->footer(
      "Examples:\n"
      "  minicriu dump -t 1234 -D /tmp/ckpt                 the tree dies once the images are complete\n"
      "  minicriu dump -t 1234 -D /tmp/ckpt -R              it runs on\n"
      "  minicriu dump -t $(pgrep -o mpirun) -D /tmp/job --ghost-limit 2G --ext-unix-sk");
  dump_cmd->add_option("-t,--tree", dump.pid, with_example("PID of the root of the tree to dump", "-t 1234"))
      ->type_name("PID")
      ->required();
  dump_cmd->add_option("-D,--images-dir", dump.images_dir,
                       with_example("Directory to write the images to (must exist)", "-D /tmp/ckpt"))
      ->type_name("DIR")
      ->required();
  dump_cmd->add_flag("-R,--leave-running", dump.leave_running,
                     with_example("Leave the tree running after the dump (default: kill it once the "
                                  "images are complete)", "-R"));
  dump_cmd->add_option("--ghost-limit", dump.ghost_limit,
                       with_example("Largest ghost file (open, no name left) whose data a dump carries, "
                                    "counting allocated data only (default 1G)", "--ghost-limit 64M"))
      ->type_name("SIZE");
  dump_cmd->add_option("--ghost-policy", dump.ghost_policy,
                       with_example("PATTERN:copy or PATTERN:fail for ghost files whose last path matches "
                                    "the glob PATTERN, regardless of --ghost-limit; repeatable, first match "
                                    "wins", "--ghost-policy '/tmp/ompi-*:copy'"))
      ->type_name("RULE");
  dump_cmd->add_flag("--ext-unix-sk", dump.ext_unix_sk,
                     with_example("Dump unix sockets whose peer is outside the tree (stream, seqpacket and "
                                  "dgram) as external: at restore each needs --inherit-fd, except a dgram "
                                  "socket whose peer has a path, which is connected to it again",
                                  "--ext-unix-sk"));
  dump_cmd->add_flag("--ext-pipes", dump.ext_pipes,
                     with_example("Dump pipes and fifos that a process outside the tree holds too (a rank's "
                                  "stdio) as external: at restore each needs --inherit-fd fd[N]:pipe:[INODE] "
                                  "or the restore hook",
                                  "--ext-pipes"));
  dump_cmd->add_option("--external", dump.external,
                       with_example("unix[INODE]: dump this one unix socket of the tree (its own inode, as a "
                                    "refusal names it) as external although its peer is outside; pipe[INODE]: "
                                    "the same for a pipe or fifo also held outside; tty[N]: "
                                    "dump the terminal /dev/pts/N although its master is outside, to be "
                                    "reopened by path at restore while that master still holds it; repeatable",
                                    "--external unix[48213] --external pipe[48300] --external tty[3]"))
      ->type_name("KIND[ID]");
  dump_cmd->add_flag("-j,--shell-job", dump.shell_job,
                     with_example("Accept every terminal /dev/pts/N of the tree whose master is outside it "
                                  "(a job started from a shell), as --external tty[N] would: reopened by "
                                  "path at restore while that master still holds it", "-j"));
  dump_cmd->add_option("--network-lock", dump.network_lock,
                       with_example("How TCP connections are held silent while the tree is frozen (and, for "
                                    "peers outside the tree, until the restore): auto (nftables, else the "
                                    "iptables commands), nftables (through libnftables, no command needed), "
                                    "iptables, or skip (no lock); default auto. Rules live in a table of "
                                    "minicriu's own, removed again after every dump", "--network-lock nftables"))
      ->type_name("MODE");
  dump_cmd->add_flag("--tcp-established", dump.tcp_established,
                     with_example("Dump TCP connections whose peer is outside the tree (restored with "
                                  "TCP_REPAIR; the peer must keep the connection until the restore). "
                                  "Connections with both ends in the tree need no option", "--tcp-established"));
  dump_cmd->add_flag("--tcp-drop-pending,--skip-in-flight", dump.tcp_drop_pending,
                     with_example("Drop connections from outside the tree that wait to be accepted on a "
                                  "listening socket of the tree (default: refuse the dump); --skip-in-flight "
                                  "is CRIU's name for it", "--tcp-drop-pending"));
  // CRIU's options for what minicriu always does: accepted, so its recipes run.
  bool criu_noop = false;
  dump_cmd->add_flag("-l,--file-locks", criu_noop,
                     with_example("Accepted for CRIU recipes; file locks and leases are always carried",
                                  "--file-locks"));
  dump_cmd->add_option("--prev-images-dir", dump.prev_images_dir,
                       with_example("Images of a pre-dump of this tree (relative to -D, or absolute): only the "
                                    "pages written since are dumped, the others are read from there (and up "
                                    "its chain) at restore", "--prev-images-dir ../pre1"))
      ->type_name("DIR");
  dump_cmd->add_flag("--track-mem", dump.track_mem,
                     with_example("Accepted for CRIU recipes; memory is write-tracked from a pre-dump on",
                                  "--track-mem"));
  dump_cmd->add_flag("--background", dump.background,
                     with_example("With --leave-running: freeze the tree only to take its state and write-protect "
                                  "its private anonymous memory (userfaultfd), then let it run while those pages "
                                  "are copied; a write to a page not yet copied waits until it is. The images are "
                                  "of the moment of the freeze. File-backed private pages and shared memory are "
                                  "still copied while frozen (-v says how much)", "-R --background"));
  dump_cmd->add_flag("--link-remap", criu_noop,
                     with_example("Accepted for CRIU recipes; a file unlinked while another name survives is "
                                  "always reached through a link made beside it (removed at restore), and "
                                  "one with no name left is carried as a ghost file", "--link-remap"));
  dump_cmd->add_flag("--ghost-fiemap,!--no-ghost-fiemap", criu_noop,
                     with_example("Accepted for CRIU recipes, either way: the data of ghost files is always "
                                  "found with SEEK_DATA/SEEK_HOLE and carried sparse, holes staying holes",
                                  "--ghost-fiemap"));
  CommonOptions common;
  add_common(dump_cmd, common);
  add_progress_after(dump_cmd, progress_after_ms);
  add_verbose(dump_cmd, verbosity);
  bool coordinated = false;
  unsigned coordinated_timeout_ms = 60000;
  dump_cmd->add_flag("--coordinated", coordinated,
                     with_example("One node's dump of `minicriu dump-nodes` (which starts it through the agent): "
                                  "once the images are synced, say so on stdout and keep the tree frozen until "
                                  "the word on stdin, go or no (no, or none: the tree runs on and the images go)",
                                  "--coordinated"));
  PageServerArgs dump_ps;
  add_page_server(dump_cmd, dump_ps,
                  "Stream the pages over TCP to `minicriu page-server` at HOST:PORT instead of writing them to "
                  "-D DIR; the other images are written to DIR and then sent too, so the server's directory is "
                  "a complete checkpoint. A broken connection fails the dump and the tree runs on. Not with "
                  "--prev-images-dir",
                  "--page-server 10.0.0.2:27027");
  dump_cmd->add_option("--coordinated-timeout", coordinated_timeout_ms,
                       with_example("With --coordinated: how long to wait for the word, in ms (default 60000)",
                                    "--coordinated-timeout 30000"))
      ->type_name("MS");

  minicriu::DumpOptions pre_dump;
  pre_dump.pre_dump = true;
  pre_dump.leave_running = true;
  auto* pre_dump_cmd = app.add_subcommand(
      "pre-dump", "Save the memory of a running tree and track what it writes from now, for a dump with "
                  "--prev-images-dir that then saves only the pages written since (the tree runs on)");
  pre_dump_cmd->footer(
      "Examples:\n"
      "  minicriu pre-dump -t 1234 -D /tmp/ckpt/1\n"
      "  minicriu pre-dump -t 1234 -D /tmp/ckpt/2 --prev-images-dir ../1\n"
      "  minicriu dump -t 1234 -D /tmp/ckpt/3 --prev-images-dir ../2 && minicriu restore -D /tmp/ckpt/3");
  pre_dump_cmd->add_option("-t,--tree", pre_dump.pid, with_example("PID of the root of the tree", "-t 1234"))
      ->type_name("PID")
      ->required();
  pre_dump_cmd->add_option("-D,--images-dir", pre_dump.images_dir,
                           with_example("Directory to write the memory images to (must exist)", "-D /tmp/ckpt/1"))
      ->type_name("DIR")
      ->required();
  pre_dump_cmd->add_option("--prev-images-dir", pre_dump.prev_images_dir,
                           with_example("Images of the previous pre-dump of this tree (relative to -D, or "
                                        "absolute): only the pages written since are saved",
                                        "--prev-images-dir ../1"))
      ->type_name("DIR");
  pre_dump_cmd->add_flag("--track-mem", pre_dump.track_mem,
                         with_example("Accepted for CRIU recipes; a pre-dump always tracks memory", "--track-mem"));
  pre_dump_cmd->add_option("--tracking-timeout", pre_dump.tracking_timeout_s,
                           with_example("How long the process that holds the write tracking waits for the next "
                                        "round, in seconds (default 600); then the next round saves every page",
                                        "--tracking-timeout 3600"))
      ->type_name("SECONDS");
  CommonOptions pre_common;
  add_common(pre_dump_cmd, pre_common);
  add_progress_after(pre_dump_cmd, progress_after_ms);
  add_verbose(pre_dump_cmd, verbosity);

  minicriu::CoordinatedDumpOptions dump_nodes;
  std::string nodes_agent = "ssh";
  std::vector<std::string> dump_node_specs;
  auto* dump_nodes_cmd = app.add_subcommand(
      "dump-nodes", "Checkpoint a job over several nodes at once, one dump per node started through the "
                    "job's rsh/ssh agent; every tree is left running if any node's dump fails");
  dump_nodes_cmd->footer(
      "Examples:\n"
      "  minicriu dump-nodes --node nodeA:4242:/ckpt/a --node nodeB:777:/ckpt/b -- --tcp-established\n"
      "  minicriu dump-nodes --agent 'ssh -x' --node n1:1234:/shared/ckpt/n1 -R");
  dump_nodes_cmd->add_option("--node", dump_node_specs,
                             with_example("HOST:PID:DIR: the tree rooted at PID on HOST (mpirun's, an orted's) "
                                          "goes into DIR there; repeatable", "--node nodeB:777:/ckpt/b"))
      ->required()->allow_extra_args(false)->type_name("HOST:PID:DIR");
  dump_nodes_cmd->add_option("--agent", nodes_agent,
                             with_example("The command that runs a command on a node, as `AGENT HOST COMMAND` "
                                          "(the job's --mca plm_rsh_agent; default ssh)", "--agent 'ssh -x'"));
  dump_nodes_cmd->add_option("--minicriu", dump_nodes.minicriu,
                             with_example("minicriu on the nodes (default: minicriu)", "--minicriu /opt/bin/minicriu"));
  dump_nodes_cmd->add_flag("-R,--leave-running", dump_nodes.leave_running,
                           with_example("Leave every tree running", "-R"));
  dump_nodes_cmd->add_option("--word-timeout", dump_nodes.word_timeout_ms,
                             with_example("How long a ready node waits for the word to go on, in ms (default 60000)",
                                          "--word-timeout 30000"))
      ->type_name("MS");
  dump_nodes_cmd->add_option("dump_options", dump_nodes.dump_args,
                             with_example("After --: options for every node's dump (--tcp-established for the "
                                          "connections between nodes, --ext-pipes...)", "-- --tcp-established"));
  add_verbose(dump_nodes_cmd, verbosity);

  minicriu::CoordinatedRestoreOptions restore_nodes;
  std::vector<std::string> restore_node_specs;
  auto* restore_nodes_cmd = app.add_subcommand(
      "restore-nodes", "Restore a job checkpointed by dump-nodes: `minicriu restore -d` on every node at once");
  restore_nodes_cmd->footer(
      "Examples:\n"
      "  minicriu restore-nodes --node nodeA:/ckpt/a --node nodeB:/ckpt/b\n"
      "  minicriu restore-nodes --agent 'ssh -x' --node n1:/shared/ckpt/n1 -- --tcp-established");
  restore_nodes_cmd->add_option("--node", restore_node_specs,
                                with_example("HOST:DIR: restore the images in DIR on HOST; repeatable",
                                             "--node nodeB:/ckpt/b"))
      ->required()->allow_extra_args(false)->type_name("HOST:DIR");
  restore_nodes_cmd->add_option("--agent", nodes_agent,
                                with_example("As for dump-nodes (default ssh)", "--agent 'ssh -x'"));
  restore_nodes_cmd->add_option("--minicriu", restore_nodes.minicriu,
                                with_example("minicriu on the nodes (default: minicriu)", "--minicriu /opt/bin/minicriu"));
  restore_nodes_cmd->add_option("restore_options", restore_nodes.restore_args,
                                with_example("After --: options for every node's restore", "-- --tcp-established"));
  add_verbose(restore_nodes_cmd, verbosity);

  minicriu::RestoreOptions restore;
  auto* restore_cmd = app.add_subcommand("restore", "Restore a tree from a directory of images");
  restore_cmd->footer(
      "Examples:\n"
      "  minicriu restore -D /tmp/ckpt             wait for the restored root, exit with its status\n"
      "  pid=$(minicriu restore -D /tmp/ckpt -d)   return once the tree runs\n"
      "  minicriu restore -D /tmp/ckpt -d --lazy   run at once, pages on first touch\n"
      "  minicriu restore -D /tmp/ckpt --inherit-fd 'fd[3]:socket:[48213]'   (fd 3: a socket the caller opened)");
  restore_cmd->add_option("-D,--images-dir", restore.images_dir,
                          with_example("Directory of the images", "-D /tmp/ckpt"))
      ->type_name("DIR")
      ->required();
  restore_cmd->add_flag("-d,--detach", restore.detach,
                        with_example("Print the root PID and return once the tree runs (default: wait for "
                                     "the restored root and exit with its status)", "-d"));
  restore_cmd->add_flag("--lazy,--lazy-pages", restore.lazy,
                        with_example("Lazy restore: the tree runs before its anonymous and shared memory is back; each "
                                     "page is read in on first touch (userfaultfd), the rest in the background "
                                     "(with -d, by a detached pager that exits once every page is in)",
                                     "--lazy"));
  restore_cmd->add_option("--ghost-dir", restore.ghost_dir,
                          with_example("Directory to recreate ghost files in when the directory they "
                                       "were in is gone (they are unlinked again once restored)",
                                       "--ghost-dir /tmp"))
      ->type_name("DIR");
  restore_cmd->add_option("--inherit-fd", restore.inherit_fds,
                          with_example("fd[N]:socket:[INODE]: minicriu's fd N stands in for the external "
                                       "socket INODE of the images (dumped with --ext-unix-sk or --external); "
                                       "the restored processes get it in the socket's place; fd[N]:pipe:[INODE]: "
                                       "fd N, an end of a pipe of the same direction, stands in for the external "
                                       "pipe INODE (--ext-pipes); repeatable",
                                       "--inherit-fd 'fd[3]:socket:[48213]' --inherit-fd 'fd[4]:pipe:[48300]'"))
      ->type_name("SPEC");
  restore_cmd->add_flag("-l,--file-locks", criu_noop,
                        with_example("Accepted for CRIU recipes; file locks and leases are always restored",
                                     "--file-locks"));
  restore_cmd->add_flag("--tcp-established", criu_noop,
                        with_example("Accepted for CRIU recipes; the dump chose which connections the images "
                                     "hold, and each is restored (TCP_REPAIR)", "--tcp-established"));
  restore_cmd->add_flag("--ext-unix-sk", criu_noop,
                        with_example("Accepted for CRIU recipes; external unix sockets of the images are "
                                     "connected again by path, or stood in for by --inherit-fd", "--ext-unix-sk"));
  restore_cmd->add_flag("-j,--shell-job", criu_noop,
                        with_example("Accepted for CRIU recipes; a terminal the dump accepted (--shell-job, "
                                     "--external tty[N]) is always reopened by its path", "-j"));
  restore_cmd->add_flag("--link-remap", criu_noop,
                        with_example("Accepted for CRIU recipes; the links the dump made are always removed "
                                     "once every holder reopened its file", "--link-remap"));
  PageServerArgs restore_ps;
  add_page_server(restore_cmd, restore_ps,
                  "Read every page from `minicriu page-server` at HOST:PORT (the server a dump --page-server went "
                  "to, or one serving a copy of the checkpoint); -D DIR needs the images but no page image. The "
                  "server must serve this very checkpoint (checked before anything is made)",
                  "--page-server 10.0.0.2:27027");
  add_common(restore_cmd, common);
  add_progress_after(restore_cmd, progress_after_ms);
  add_verbose(restore_cmd, verbosity);

  minicriu::PageServerOptions page_srv;
  unsigned page_srv_port = 0;
  bool page_srv_daemon = false;
  auto* page_srv_cmd = app.add_subcommand(
      "page-server", "Receive the pages (and images) of `dump --page-server` into a directory, and serve its "
                     "pages to `restore --page-server`, as many as ask, until killed");
  page_srv_cmd->footer(
      "Examples:\n"
      "  minicriu page-server -D /ckpt --port 27027            on the machine that keeps the checkpoint\n"
      "  minicriu dump -t 1234 -D /tmp/meta --page-server ckpt-host:27027\n"
      "  minicriu restore -D /tmp/meta --page-server ckpt-host:27027   (or restore -D /ckpt on ckpt-host)");
  page_srv_cmd->add_option("-D,--images-dir", page_srv.images_dir,
                           with_example("Directory the dumps go into and the restores read from (must exist); "
                                        "each complete dump replaces the previous one", "-D /ckpt"))
      ->type_name("DIR")
      ->required();
  page_srv_cmd->add_option("--port", page_srv_port,
                           with_example("TCP port to listen on (0: a free one; the line on stdout says which)",
                                        "--port 27027"))
      ->type_name("N")
      ->required()
      ->check(CLI::Range(0, 65535));
  page_srv_cmd->add_option("--address", page_srv.address,
                           with_example("Address to listen on (default: every address, IPv6 and IPv4)",
                                        "--address 10.0.0.2"))
      ->type_name("HOST");
  page_srv_cmd->add_flag("-d,--daemon", page_srv_daemon,
                         with_example("Run in the background: return once listening, having printed the line "
                                      "with the port and the server's pid", "-d"));
  add_verbose(page_srv_cmd, verbosity);

  minicriu::ShowOptions show;
  auto* show_cmd = app.add_subcommand("show", "Decode the images of a checkpoint: a summary, then every image");
  show_cmd->footer(
      "Examples:\n"
      "  minicriu show -D /tmp/ckpt\n"
      "  minicriu show -D /tmp/ckpt --backtrace\n"
      "  minicriu show -D /tmp/ckpt --json | jq '.summary'    (schema: docs/show-json.md)");
  show_cmd->add_option("-D,--images-dir", show.images_dir, with_example("Directory of the images", "-D /tmp/ckpt"))
      ->type_name("DIR")
      ->required();
  show_cmd->add_flag("--json", show.json,
                     with_example("Print JSON for scripts instead of text (a stable schema with a "
                                  "schema_version field, documented in docs/show-json.md)", "--json"));
  show_cmd->add_flag("--backtrace", show.backtrace,
                     with_example("Also unwind each thread's stack at the dump from the images: function, "
                                  "offset and, where the binaries have debug information, file:line (a "
                                  "binary changed or gone since the dump is said per frame)",
                                  "--backtrace"));

  minicriu::CoredumpOptions coredump;
  auto* coredump_cmd = app.add_subcommand(
      "coredump", "Write an ELF core file per process of a checkpoint (core.PID), for gdb");
  coredump_cmd->footer(
      "Examples:\n"
      "  minicriu coredump -D /tmp/ckpt --output-dir /tmp/cores\n"
      "  gdb -c /tmp/cores/core.1234 /usr/bin/myprog -ex 'thread apply all bt'");
  coredump_cmd->add_option("-D,--images-dir", coredump.images_dir,
                           with_example("Directory of the images", "-D /tmp/ckpt"))
      ->type_name("DIR")
      ->required();
  coredump_cmd->add_option("-o,--output-dir", coredump.output_dir,
                           with_example("Directory to write core.PID files to (default: the current "
                                        "directory)", "--output-dir /tmp/cores"))
      ->type_name("DIR");
  add_verbose(coredump_cmd, verbosity);

  auto* check_cmd = app.add_subcommand(
      "check", "Probe what this kernel and these privileges support; exit 1 if a required "
               "feature is missing");
  check_cmd->footer("Example:\n  minicriu check");
  bool cleanup = false;
  check_cmd->add_flag("--cleanup", cleanup,
                      with_example("Instead of probing, put back the trees of dumps whose dumper was killed "
                                   "midway (SIGKILL, OOM) and whose guardian died too: replay their journals "
                                   "in /run/minicriu ($MINICRIU_JOURNAL_DIR): registers, code bytes, the "
                                   "parasite's leftovers, TCP repair mode, the stopped processes continued. "
                                   "A journal whose dumper or guardian still runs is left alone",
                                   "minicriu check --cleanup"));
  add_verbose(check_cmd, verbosity);

  // --man needs no command; every other use needs one.
  app.require_subcommand(0, 1);
  std::vector<std::string> args = minicriu::cli::rewrite_criu_spellings(argc, argv);
  if (auto refused = minicriu::cli::unsupported_criu_option(app, args)) {
    std::fprintf(stderr, "minicriu: error: %s\n", refused->c_str());
    return 1;
  }
  std::vector<char*> argp;
  for (auto& a : args) argp.push_back(a.data());
  CLI11_PARSE(app, static_cast<int>(argp.size()), argp.data());
  if (man) {
    std::string page = minicriu::cli::man_page(app, minicriu::kVersion);
    std::fwrite(page.data(), 1, page.size(), stdout);
    return 0;
  }

  if (dump_cmd->parsed()) {
    auto ps = dump_ps.resolve();
    if (!ps) return report(ps.error());
    dump.page_server = *ps;
    if (!open_log(common)) return 1;
    verbosity = effective_verbosity(verbosity, common);
    dump.log = log_options(verbosity, progress_after_ms, common.log_fd);
    dump.cancel = &cancel_by_signal;
    catch_stop_signals();
    if (coordinated) dump.commit_gate = minicriu::coordinated_node_gate(STDIN_FILENO, STDOUT_FILENO, coordinated_timeout_ms);
    auto r = minicriu::dump(dump);
    if (!r) return report(r.error(), common.log_fd);
    if (coordinated) minicriu::coordinated_node_report(STDOUT_FILENO, *r);
    if (!write_pidfile(common, dump.pid)) return 1;
    if (verbosity > 0)
      std::fprintf(stderr, "dumped %u process(es), %u thread(s), %.1f MiB of pages (%llu page(s) left in the "
                           "parent); frozen %.3f s\n",
                   r->processes, r->threads, static_cast<double>(r->page_bytes) / (1 << 20),
                   static_cast<unsigned long long>(r->pages_in_parent), static_cast<double>(r->frozen_ns) / 1e9);
    if (verbosity > 0 && dump.background)
      std::fprintf(stderr, "background: %.1f MiB copied in %.3f s with the tree running, %llu write fault(s), %llu "
                           "on a page not yet copied\n",
                   static_cast<double>(r->pages_background * 4096) / (1 << 20),
                   static_cast<double>(r->background_ns) / 1e9,
                   static_cast<unsigned long long>(r->background_faults),
                   static_cast<unsigned long long>(r->background_faults_copied));
    return 0;
  }
  if (pre_dump_cmd->parsed()) {
    if (!open_log(pre_common)) return 1;
    pre_dump.log = log_options(effective_verbosity(verbosity, pre_common), progress_after_ms, pre_common.log_fd);
    pre_dump.cancel = &cancel_by_signal;
    catch_stop_signals();
    auto r = minicriu::dump(pre_dump);
    if (!r) return report(r.error(), pre_common.log_fd);
    if (!write_pidfile(pre_common, pre_dump.pid)) return 1;
    if (verbosity > 0)
      std::fprintf(stderr, "pre-dumped %u process(es), %.1f MiB of pages (%llu page(s) left in the parent); "
                           "frozen %.3f s\n",
                   r->processes, static_cast<double>(r->page_bytes) / (1 << 20),
                   static_cast<unsigned long long>(r->pages_in_parent), static_cast<double>(r->frozen_ns) / 1e9);
    return 0;
  }
  if (restore_cmd->parsed()) {
    auto ps = restore_ps.resolve();
    if (!ps) return report(ps.error());
    restore.page_server = *ps;
    if (!open_log(common)) return 1;
    restore.log = log_options(effective_verbosity(verbosity, common), progress_after_ms, common.log_fd);
    bool pidfile_ok = true;
    restore.on_running = [&](pid_t root) { pidfile_ok = write_pidfile(common, root); };
    restore.cancel = &cancel_by_signal;
    catch_stop_signals();
    auto r = minicriu::restore(restore);
    if (!r) return report(r.error(), common.log_fd);
    if (!pidfile_ok && restore.detach) return 1;
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
      dump_nodes.log = log_options(verbosity, progress_after_ms);
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
    restore_nodes.log = log_options(verbosity, progress_after_ms);
    auto r = minicriu::coordinated_restore(restore_nodes);
    if (!r) return report(r.error());
    for (auto& n : r->nodes) std::printf("%s: %d\n", n.host.c_str(), n.root_pid);
    return 0;
  }
  if (page_srv_cmd->parsed()) {
    page_srv.port = static_cast<uint16_t>(page_srv_port);
    page_srv.log = log_options(verbosity, progress_after_ms);
    page_srv.log.progress = false;
    page_srv.cancel = &cancel_by_signal;
    return run_page_server(page_srv, page_srv_daemon);
  }
  if (check_cmd->parsed() && cleanup) {
    auto r = minicriu::cleanup_dead_dumps(log_options(verbosity, progress_after_ms));
    if (!r) return report(r.error());
    for (auto& line : *r) std::printf("%s\n", line.c_str());
    if (r->empty()) std::printf("no journal of a dead dump\n");
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
  if (coredump_cmd->parsed()) {
    coredump.log = log_options(verbosity, progress_after_ms);
    auto r = minicriu::coredump(coredump);
    if (!r) return report(r.error());
    for (auto& core : *r) {
      std::printf("%s: pid %d, %u segment(s), %.1f MiB\n", core.path.c_str(), core.pid, core.segments,
                  static_cast<double>(core.bytes) / (1 << 20));
      for (auto& what : core.left_out)
        std::fprintf(stderr, "minicriu: warning: %s: left out (no data in its segments): %s\n",
                     core.path.c_str(), what.c_str());
    }
    return 0;
  }
  std::fputs(app.help().c_str(), stderr);
  return 1;
}
