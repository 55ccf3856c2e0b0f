// Helpers for end-to-end tests: start a test program, wait until it is ready,
// run the minicriu CLI, signal and reap. The test binary makes itself a child
// subreaper, so that restored trees are reaped here and their PIDs freed.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>

#include "minicriu.pb.h"
#include <string>
#include <vector>

namespace e2e {

std::string minicriu_bin();
// A program of tests/programs by name, or any by its path (a name with a '/').
std::string program(const std::string& name);

// A fresh directory under /tmp, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int status = -1;       // exit code, or 128+signal
  std::string output;    // stdout and stderr
};
// Runs a command with no stdin, capturing its output; pass_fd (if not -1)
// is its fd 3, no other fd is inherited.
CommandResult run(const std::vector<std::string>& argv, int pass_fd = -1);
CommandResult run_minicriu(const std::vector<std::string>& args, int pass_fd = -1);
// The same with several fds: pass_fds[i] is the command's fd 3 + i.
CommandResult run(const std::vector<std::string>& argv, const std::vector<int>& pass_fds);
CommandResult run_minicriu(const std::vector<std::string>& args, const std::vector<int>& pass_fds);

// A test program started as our child: stdio to a log file in dir, pass_fd
// (if not -1) as its fd 3, no other fd inherited; ready once it wrote its
// ready file.
class Program {
 public:
  Program(const std::string& name, const TempDir& dir, std::vector<std::string> extra_args = {},
          int pass_fd = -1);
  ~Program();
  pid_t pid() const { return pid_; }
  bool wait_ready(int timeout_ms = 10000);
  bool alive() const;
  void signal(int sig) const;
  // Waits for the exit (reaping it) and returns the exit code or 128+signal.
  std::optional<int> wait_exit(int timeout_ms = 20000);
  std::string log() const;
  // Forget the pid (it was killed by a dump and is reaped elsewhere).
  void forget() { pid_ = -1; }

 private:
  pid_t pid_ = -1;
  std::string ready_file_;
  std::string log_file_;
};

// A tmpfs mounted for one test (a tiny disk, a read-only directory), unmounted
// at the end. ok() is false where mounting is not permitted.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& where, const std::string& options);
  ~TmpfsMount();
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  bool ok() const { return ok_; }

 private:
  std::string where_;
  bool ok_ = false;
};

// Waits for any child with this pid (restored processes are our children, or
// reparented to us as subreaper) and returns its exit code or 128+signal.
std::optional<int> wait_pid(pid_t pid, int timeout_ms = 20000);
// Waits until no process has this pid (a killed target is gone and reaped).
bool wait_gone(pid_t pid, int timeout_ms = 10000);
// Reaps any exited children (e.g. a killed target) without blocking.
void reap_zombies();
bool pid_exists(pid_t pid);

// `minicriu show --json -D images`, decoded (a test failure if it does not).
minicriu::img::CheckpointView show_json(const std::string& images);

// A directory "images" inside dir, created.
std::string images_dir(const TempDir& dir, const std::string& name = "images");

// `minicriu dump -t PID -D images --leave-running`, expected to succeed.
void dump_leave_running(const Program& p, const std::string& images);

// The program is still running and, told to check itself, passes.
void expect_intact(Program& p);

// The whole text of a file ("" if it cannot be read).
std::string read_text(const std::string& path);

// Dumps pid (killing it) and waits until the pid is free again; p is the
// Program that started it, if it is still our child.
void dump_and_reap(pid_t pid, const std::string& images, Program* p);

// The restored root's pid that `restore -d` printed last, -1 if it failed.
pid_t restored_pid(const CommandResult& r);
// `minicriu restore -d`: the restored root's pid (-1 on failure).
pid_t restore_detached(const std::string& images);

// The processes of restored checkpoints, and those a test started by hand
// (add): SIGKILLed and reaped at the end of the scope if still there, so a
// failed test leaves no tree behind.
class RestoredTree {
 public:
  RestoredTree() = default;
  RestoredTree(const RestoredTree&) = delete;
  RestoredTree& operator=(const RestoredTree&) = delete;
  ~RestoredTree();
  void add_from(const std::string& images);
  void add(pid_t pid) { pids_.push_back(pid); }

 private:
  std::vector<pid_t> pids_;
};

// Dump (killing) -> restore -d, `cycles` times; then the program checks
// itself. same_maps: /proc/PID/maps must come back identical (not where files
// are recreated under other names or inodes: ghosts, memfds).
void cycle(const std::string& program, int cycles, std::vector<std::string> args = {},
           bool same_maps = true);

// A failed command: exit 1 and one line "minicriu: error: ..." holding needle,
// nothing else: what a user or a runtime parses.
void expect_one_line_error(const CommandResult& r, const std::string& needle);

// What a process holds (fds and their targets, mappings) and the state of
// its threads (who traces them, whether they are stopped): what a failed or
// cancelled dump must leave as it was.
struct Holdings {
  std::map<int, std::string> fds;
  std::string maps;
  std::map<std::string, std::string> threads;  // tid -> "tracer T state S"
  bool operator==(const Holdings&) const = default;
};
Holdings holdings_of(pid_t pid);

// The inode number of an fd of this process (a failed fstat fails the test).
uint64_t ino_of(int fd);

// A dump of the program (started with args) refused in one line that holds
// every needle (made from its pid; the first is the one the line must
// have), and the program intact after it.
void expect_dump_refused(const std::string& program, const std::vector<std::string>& args,
                         const std::function<std::vector<std::string>(pid_t)>& needles);

// Pages of one process in its page image (not those left in parent images).
uint64_t dumped_pages(const minicriu::img::ProcessView& proc);

}  // namespace e2e
