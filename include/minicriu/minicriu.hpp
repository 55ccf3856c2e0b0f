// libminicriu: checkpoint/restore of Linux process trees.
//
// Every entry point returns a Result: a value, or an Error with one clear line
// (what failed, on which pid/fd/path, what to do) and the errno behind it.
// Nothing here calls exit() or throws across the boundary; two dumps may run at
// once in one program, as long as they target different trees.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace minicriu {

class [[nodiscard]] Error {
 public:
  Error() = default;
  Error(std::string message, int err = 0) : message_(std::move(message)), errno_(err) {}

  const std::string& message() const { return message_; }
  int err() const { return errno_; }

  // Prefixes context as the error travels up: "pid 12" + "fd 3: ...".
  Error& context(const std::string& what) {
    message_ = what + ": " + message_;
    return *this;
  }

  // The one line a user sees: the message and, if any, the errno's text.
  std::string what() const;

 private:
  std::string message_;
  int errno_ = 0;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

// Stops a dump or a restore while it runs (DumpOptions::cancel,
// RestoreOptions::cancel), from another thread or from a signal handler:
// request() is one lock-free atomic store. The engine looks at it at every
// step and in every wait; a dump then fails as any failed dump does (its
// parasites cured, the tree released and running on, its images and
// temporary files removed), a restore whose tree does not run yet kills
// what it made. A restore that waits for its running tree's root passes
// the signal on to the root instead. The cure and the release themselves
// are never cut short: a second request changes nothing.
class Cancel {
 public:
  // signo: the signal that asked for it, named in the error (0: a call).
  void request(int signo = 0) noexcept { state_.store(signo + 1, std::memory_order_relaxed); }
  bool requested() const noexcept { return state_.load(std::memory_order_relaxed) != 0; }
  int signal() const noexcept { return requested() ? state_.load(std::memory_order_relaxed) - 1 : 0; }

 private:
  static_assert(std::atomic<int>::is_always_lock_free, "request() runs in signal handlers");
  std::atomic<int> state_{0};
};

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

// Receives every log line at or below the chosen level, already formatted with a
// timestamp. Default: stderr.
using LogSink = std::function<void(LogLevel, std::string_view line)>;

// How far the pages of a dump or a restore have moved, reported while they
// move (at most every ~100 ms) and once when they are all through.
struct Progress {
  std::string_view phase;        // "dump" or "restore"
  pid_t pid = 0;                 // dump: the process whose pages move; restore: the root
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;      // dump: the process's resident and swapped memory, an estimate
  double elapsed_s = 0;          // since the transfer began
  double bytes_per_s = 0;        // on average so far
  double eta_s = -1;             // time left at that rate; -1 when unknown
  bool finished = false;         // the last report of this transfer
};
using ProgressSink = std::function<void(const Progress&)>;

struct LogOptions {
  LogLevel level = LogLevel::warn;
  LogSink sink;             // empty: stderr
  // Transfers of pages that last longer than progress_after_ms report how
  // far they are: to progress_sink when set (in the calling thread); else,
  // with progress, as one line redrawn on stderr (a terminal); else as
  // info-level log lines, once a second.
  bool progress = false;
  ProgressSink progress_sink;
  uint32_t progress_after_ms = 1000;
};

// An object of the tree that reaches outside it: a unix socket whose peer is
// held by a process that is not dumped (a rank's connection to its runtime),
// a pipe or fifo also held by one (a rank's stdio), a terminal whose master
// is. It is only dumped when accepted (--ext-unix-sk, --ext-pipes, --external
// unix[INODE]|pipe[INODE]|tty[N], or the dump hook), and at restore something
// must stand in for it (--inherit-fd fd[N]:socket:[INODE] or
// fd[N]:pipe:[INODE], or the restore hook).
struct ExternalObject {
  std::string kind;          // "unix", "pipe" (a pipe or fifo), "tty" (a pty slave whose master is outside)
  std::string key;           // "socket:[INODE]", "pipe:[INODE]": the name --inherit-fd uses
  uint64_t inode = 0;        // the socket's own inode (held in the tree); the pipe's (a fifo's
                             // file's); a tty's pts index
  std::string type;          // "stream", "dgram", "seqpacket"; for a pipe the end the tree
                             // holds, "read" or "write" (the stand-in must be such an end)
  uint64_t peer_inode = 0;   // the peer socket, outside the tree
  std::string peer_name;     // the peer's bound path or @abstract name, if any
  pid_t pid = 0;             // at dump: one process of the tree holding it
  int fd = -1;               //   and the fd there
  pid_t peer_pid = 0;        // at dump: a process outside holding the peer (0: none found)
  std::string description;   // one line for people
};

// Asked at dump for every external object not accepted by the options:
// return true to dump it as external.
using ExternalDumpHook = std::function<bool(const ExternalObject&)>;
// Asked at restore for every external object that --inherit-fd did not
// cover: return an fd of the caller to stand in for it (the restore dups it;
// the caller keeps its own), or an Error.
using ExternalRestoreHook = std::function<std::expected<int, Error>(const ExternalObject&)>;

// The write tracking a pre-dump leaves for the next round, held by the
// caller (DumpOptions::tracking): the userfaultfds that keep the tree's
// memory write-protected in asynchronous mode. Dropping it ends the
// tracking (the next round then dumps every page).
class MemoryTracking;

struct DumpOptions {
  pid_t pid = 0;                 // root of the tree to dump
  std::string images_dir;        // must exist and be writable
  bool leave_running = false;    // cure and detach instead of killing the tree
  // Ghost files (open, no name left): how much allocated data one may carry,
  // "64M", "2G"...; empty for the default (1 GiB).
  std::string ghost_limit;
  // Rules by path that win over the limit, first match first:
  // "/tmp/ompi-*:copy", "/scratch/*:fail".
  std::vector<std::string> ghost_policy;
  // Unix sockets whose peer is outside the tree: all of them (ext_unix_sk),
  // or the ones named "unix[INODE]" in external. Others make the dump fail.
  // "tty[N]" in external: the terminal /dev/pts/N whose master is outside
  // the tree, reopened by path at restore (its master must still hold it).
  bool ext_unix_sk = false;
  // Pipes and fifos also held by a process outside the tree (a rank's stdio,
  // whose other ends are its runtime's): all of them (ext_pipes), or the ones
  // named "pipe[INODE]" in external. Others make the dump fail. The tree must
  // hold one end only; bytes queued in a pipe it reads from are carried, a
  // pipe it writes to must have none queued.
  bool ext_pipes = false;
  std::vector<std::string> external;
  ExternalDumpHook external_hook;
  // Every terminal whose master is outside the tree (a job started from a
  // shell): as if each were named tty[N] in external.
  bool shell_job = false;
  // Holds the tree's TCP connections silent while it is frozen (and, for
  // connections to peers outside the tree, from its kill to its restore):
  // "auto" (nftables, else the iptables commands), "nftables", "iptables",
  // or "skip" (no lock). A tree without TCP connections needs no firewall.
  std::string network_lock = "auto";
  // A TCP connection whose peer is outside the tree is dumped (with
  // TCP_REPAIR) instead of refused: the user promises the peer stays.
  bool tcp_established = false;
  // A connection waiting to be accepted on a listener of the tree whose
  // connecting end is outside the tree is dropped instead of refused.
  bool tcp_drop_pending = false;
  LogOptions log;
  // One node's dump of a coordinated dump (coordinated_dump() below): called
  // once every image is complete and synced, the tree still frozen (with
  // leave_running: already running again). The dump goes on (the tree dies)
  // only if it returns success; else it fails like any other, images
  // removed and the tree left running. A dump with a gate refuses a tree
  // whose dump needs a destructive step (connections not yet accepted): that
  // step could not be undone on a no.
  std::function<Status()> commit_gate;

  // ---- Pre-dump and incremental images (CRIU's pre-dump, --prev-images-dir)
  // A pre-dump: the tree is frozen only to arm write tracking (userfaultfd
  // asynchronous write-protect, read back with PAGEMAP_SCAN) and to drain
  // its present pages; it runs on; only memory is written (a pre-dump is a
  // parent for the next round, not restorable).
  bool pre_dump = false;
  // The images of the previous round of this tree (a pre-dump), relative to
  // images_dir or absolute: only the pages written since it are dumped, the
  // others are marked in the parent (restore reads through the chain). A
  // parent of another tree is refused.
  std::string prev_images_dir;
  // Accepted for CRIU recipes: a pre-dump always tracks memory.
  bool track_mem = false;
  // Where a pre-dump leaves its tracking and the next round takes it: here
  // (the library holds it) when set, else in a holder process listening in
  // images_dir that exits once taken, after tracking_timeout_s, or when the
  // root exits.
  std::shared_ptr<MemoryTracking> tracking;
  unsigned tracking_timeout_s = 600;
  // A background checkpoint (with leave_running only): frozen only to take
  // every piece of state but the pages of private anonymous memory, which
  // are write-protected (userfaultfd, synchronous mode) and copied once the
  // tree runs again; a write to a page not yet copied waits until it is.
  // The checkpoint is of the moment of the freeze. What write-protect
  // cannot cover (file-backed private pages, shared memory, memory without
  // read access or executable) is copied while frozen.
  bool background = false;
  // Asked to stop (see Cancel); null: never. Must outlive the dump.
  const Cancel* cancel = nullptr;
  // "HOST:PORT" of a `minicriu page-server` (page_server() below): the pages
  // stream there over TCP instead of into images_dir, and once written the
  // other images (small) follow, so the server's directory is a complete
  // checkpoint; images_dir keeps those other images. A broken connection
  // fails the dump, the tree running on. Not with pre_dump or
  // prev_images_dir. Empty: no page server.
  std::string page_server;
};

struct DumpStats {
  unsigned processes = 0;
  unsigned threads = 0;
  uint64_t vmas = 0;
  uint64_t pages_dumped = 0;     // 4 KiB pages written to the page images
  uint64_t page_bytes = 0;
  uint64_t frozen_ns = 0;        // from the first seize to the last release
  uint64_t total_ns = 0;
  // With prev_images_dir: present pages left unchanged in the parent images,
  // and pages of write-tracked memory written since the parent round.
  uint64_t pages_in_parent = 0;
  uint64_t pages_changed = 0;
  bool write_tracked = false;    // some memory was write-tracked (pre-dump: armed)
  // A background dump: pages copied after the tree ran again, the write
  // faults answered meanwhile (of them, on pages not yet copied), and how
  // long the copy took.
  uint64_t pages_background = 0;
  uint64_t background_faults = 0;
  uint64_t background_faults_copied = 0;
  uint64_t background_ns = 0;
};

[[nodiscard]] Result<DumpStats> dump(const DumpOptions& options);

// ---- An iterative dump (libcriu's criu_dump_iters) -------------------------
//
// Pre-dumps the tree round after round, each saving only what the tree wrote
// since the round before (write tracking held in this process), until the
// callback says to make the final dump: it freezes the tree and saves the
// pages written since the last pre-dump, with everything else. The rounds
// go into options.images_dir/1, /2, ... each the parent of the next; the
// last one is the checkpoint (restore -D images_dir/N).
struct DumpRound {
  unsigned round = 0;            // 1, 2, ...
  bool final = false;            // the final dump (the callback is not asked after it)
  std::string images_dir;        // where this round's images went
  uint64_t pages_written = 0;    // pages written to this round's page images
  uint64_t pages_changed = 0;    // of the tracked memory, pages the tree wrote since the round before
  uint64_t pages_in_parent = 0;  // present pages left unchanged in the round before
  uint64_t frozen_ns = 0;        // how long the tree was frozen in this round
};
// After each pre-dump round: > 0 pre-dump again, 0 make the final dump,
// < 0 abort (the tree runs on; the rounds' images stay).
using DumpItersCallback = std::function<int(const DumpRound&)>;
struct DumpItersResult {
  std::vector<DumpRound> rounds;
  DumpStats stats;               // of the final dump
  std::string images_dir;        // of the final dump: the one to restore
};
// options: as for dump() (leave_running applies to the final dump); pre_dump,
// prev_images_dir and tracking are the rounds' own and must be left unset.
[[nodiscard]] Result<DumpItersResult> dump_iters(const DumpOptions& options, const DumpItersCallback& more);

struct RestoreOptions {
  std::string images_dir;
  // Where to recreate a ghost file whose directory no longer exists.
  std::string ghost_dir;
  // "fd[N]:socket:[INODE]": the caller's fd N stands in for the external
  // socket INODE of the images (the restored processes get a dup of it).
  // "fd[N]:pipe:[INODE]": fd N, an end of a pipe (or a fifo) of the same
  // direction, stands in for every end the tree held of the external pipe
  // INODE (each a new open file description of it, with the dumped flags);
  // the bytes the tree had not read yet are written into it first.
  std::vector<std::string> inherit_fds;
  ExternalRestoreHook external_hook;
  bool detach = false;           // return after the tree runs; else wait for the root
  // Lazy restore (CRIU's --lazy-pages): the tree runs before its anonymous
  // memory is back; each page comes on first touch (userfaultfd), the rest
  // in the background. With detach, the pager goes on in a process of its
  // own until every page is in.
  bool lazy = false;
  LogOptions log;
  // Asked to stop (see Cancel); null: never. Must outlive the restore.
  const Cancel* cancel = nullptr;
  // Called with the root's pid once the tree runs, before the wait for it
  // (the CLI's --pidfile).
  std::function<void(pid_t root)> on_running;
  // "HOST:PORT" of the `minicriu page-server` that holds the pages: every
  // page is read from there (images_dir needs no page image, only the
  // others). The server must serve this very checkpoint (checked before
  // anything is made). Empty: the page images of images_dir.
  std::string page_server;
};

struct RestoreResult {
  pid_t root_pid = 0;
  int exit_status = -1;          // wait status of the root, when not detached
};

[[nodiscard]] Result<RestoreResult> restore(const RestoreOptions& options);

// ---- A page server (`minicriu page-server`, CRIU's page-server) ------------
//
// Listens on TCP; receives the dumps made with DumpOptions::page_server into
// images_dir (each published whole once complete, replacing the previous
// one; a dump whose connection breaks leaves the directory as it was), and
// serves the pages of images_dir to restores (RestoreOptions::page_server,
// lazy restores), as many as ask, one after another or at once, until
// cancel is requested.
struct PageServerOptions {
  std::string images_dir;      // must exist and be writable
  std::string address;         // to listen on; empty: every address
  uint16_t port = 0;           // 0: a free port (on_listening says which)
  LogOptions log;
  const Cancel* cancel = nullptr;
  // Called once listening, with the port (the CLI's -d returns there).
  std::function<void(uint16_t port)> on_listening;
};
[[nodiscard]] Status page_server(const PageServerOptions& options);

// ---- A job over several machines: one coordinated checkpoint --------------
//
// The runtime that spans nodes is the job's own (mpirun on the first node
// starting orted on the others over rsh/ssh); minicriu runs under it, one
// dump per node, reached through the same agent as `AGENT HOST COMMAND`.
// coordinated_dump() starts `minicriu dump --coordinated` on every node at
// once. Each dumps its tree and, once its images are synced, holds the tree
// frozen (its connections locked) and says it is ready. Only when every node
// is ready are all told to go on (and kill their trees, or leave them
// running); if any node fails first, all the others are told no: their
// images go and their trees run on, as after any failed dump. The
// connections between nodes have their peers outside each node's tree, so
// dump_args needs "--tcp-established"; each node's network lock then holds
// its side silent from its kill until its own restore, and the other side's
// retransmissions meet no reset.

// One node's part of the job: the tree that runs it there (mpirun's, an
// orted's: its root, a session leader such as the shell the agent started)
// and the images directory, as that node sees them.
struct NodeTree {
  std::string host;          // as the agent reaches it
  pid_t pid = 0;             // the root of the tree there (dump only)
  std::string images_dir;
};

struct CoordinatedDumpOptions {
  std::vector<NodeTree> nodes;
  // The agent's command before the host, as --mca plm_rsh_agent spells it:
  // {"ssh"}, {"ssh", "-x"}. The command on the node follows as one string
  // for its shell, as ssh passes it.
  std::vector<std::string> agent{"ssh"};
  std::string minicriu = "minicriu";   // the command on the nodes
  // Options of every node's dump, as the CLI spells them ("--tcp-established").
  std::vector<std::string> dump_args;
  bool leave_running = false;
  // How long a ready node waits for the word (then its tree runs on), and
  // how long the coordinator waits for every node to be ready.
  unsigned word_timeout_ms = 60000;
  unsigned ready_timeout_ms = 600000;
  LogOptions log;
};

struct NodeDumpStats {
  std::string host;
  DumpStats stats;               // as the node reported them
};
struct CoordinatedDumpStats {
  std::vector<NodeDumpStats> nodes;
  uint64_t frozen_ns = 0;        // the longest any node's tree was frozen
  uint64_t total_ns = 0;
};

// Fails in one line naming the node that failed and what it said; unless
// the failure came after the word to go on (reported as such), every node's
// tree was left running.
[[nodiscard]] Result<CoordinatedDumpStats> coordinated_dump(const CoordinatedDumpOptions& options);

struct CoordinatedRestoreOptions {
  std::vector<NodeTree> nodes;   // pid unused
  std::vector<std::string> agent{"ssh"};
  std::string minicriu = "minicriu";
  std::vector<std::string> restore_args;
  LogOptions log;
};
struct NodeRestoreResult {
  std::string host;
  pid_t root_pid = 0;
  uint64_t ns = 0;               // the node's restore, as the coordinator saw it
};
struct CoordinatedRestoreResult {
  std::vector<NodeRestoreResult> nodes;
  uint64_t total_ns = 0;
};

// `minicriu restore -d` on every node at once (each removes its own network
// lock once its tree runs); fails naming the nodes that did not restore.
[[nodiscard]] Result<CoordinatedRestoreResult> coordinated_restore(const CoordinatedRestoreOptions& options);

// The node's side, for `minicriu dump --coordinated`: a commit gate that
// tells the coordinator on out_fd that the node is ready and waits on in_fd
// for its word, and the node's last line on out_fd, with its stats.
std::function<Status()> coordinated_node_gate(int in_fd, int out_fd, unsigned timeout_ms);
void coordinated_node_report(int out_fd, const DumpStats& stats);

struct ShowOptions {
  std::string images_dir;
  bool json = false;        // the schema of docs/show-json.md
  // Each thread's stack at the dump, unwound from the images and named from
  // the binaries they map (a binary changed or gone since is said per frame).
  bool backtrace = false;
};

// Decodes every image of a checkpoint for people (text, a summary first) or
// scripts (JSON). A checkpoint that is incomplete or inconsistent is an
// error naming what is wrong.
[[nodiscard]] Result<std::string> show(const ShowOptions& options);

struct CoredumpOptions {
  std::string images_dir;
  std::string output_dir;   // where core.PID files go; empty: the current directory
  LogOptions log;
};

struct CoreFile {
  pid_t pid = 0;
  std::string path;         // OUTPUT_DIR/core.PID
  uint64_t bytes = 0;       // its size (a sparse file: zero pages are holes)
  uint32_t segments = 0;    // PT_LOADs
  // What the images lack and the files no longer give (a library changed
  // since the dump): its PT_LOADs have no data (p_filesz 0). One line each.
  std::vector<std::string> left_out;
};

// An ELF core file per process of a checkpoint (zombies have none), for
// gdb: `gdb -c core.PID EXE`.
[[nodiscard]] Result<std::vector<CoreFile>> coredump(const CoredumpOptions& options);

// What this kernel and this process's privileges support, item by item.
struct CheckItem {
  std::string name;
  bool ok = false;
  bool required = false;   // a dump or restore cannot work without it
  std::string detail;
};

[[nodiscard]] Result<std::vector<CheckItem>> check();

}  // namespace minicriu
