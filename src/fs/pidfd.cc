// pidfd: a handle on one process (or, with PIDFD_THREAD, one thread). It can
// only come back pointing at the same process if that process comes back with
// the same pid, which is true of the dumped tree and of nothing else: a pidfd
// to any other process is refused at dump. Restored with pidfd_open(pid).
// Each task opens its files once its own children exist, not its
// grandchildren: a pidfd to a process of the tree that is not there yet waits
// for its restore (every process of the tree is made before any runs).
//
// A pidfd to a process that exited and was reaped (fdinfo "Pid: -1") is
// carried too: at restore a child made only to exit, and reaped at once,
// gives a pidfd with the same behaviour (readable, its pid -1, waitid()
// ECHILD, pidfd_send_signal() ESRCH).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include "base/syscalls.hpp"
#include "fs/anon_inode.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

// The pidfd_open flags are file flags: PIDFD_NONBLOCK is O_NONBLOCK and
// PIDFD_THREAD (Linux 6.9, newer than bookworm's headers) is O_EXCL.
constexpr uint32_t kPidfdNonblock = O_NONBLOCK;
constexpr uint32_t kPidfdThread = O_EXCL;

// How long a pidfd waits for a process of the tree to be made.
constexpr auto kWaitForProcess = std::chrono::seconds(20);

// A pidfd to a process that has exited and been reaped: one made to exit now.
Result<UniqueFd> exited_pidfd(unsigned flags) {
  pid_t child = ::fork();
  if (child < 0) return fail_errno("fork, for a pidfd to an exited process");
  if (child == 0) ::_exit(0);
  UniqueFd fd(sys::pidfd_open(child, flags));
  int e = errno;
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (!fd) return std::unexpected(Error("pidfd_open of a child made to exit", e));
  return fd;
}

class PidFdKind final : public Kind {
 public:
  const char* name() const override { return "pidfd"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "pidfd"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env) override {
    // "Pid:\t%d" (kernel/pid.c or fs/pidfs.c, pidfd_show_fdinfo): the pid in
    // our pid namespace, -1 once the process is gone, 0 if it is in a pid
    // namespace we cannot see.
    auto v = proc::fdinfo_field(fd.fdinfo.text, "Pid");
    char* end = nullptr;
    long pid = v ? std::strtol(v->c_str(), &end, 10) : 0;
    if (!v || end == v->c_str())
      return failf("{} ({}): fdinfo has no \"Pid:\" line; this kernel shows pidfds in another "
                   "format than minicriu knows", fd.what, fd.link);
    if (pid < 0) {
      img::PidFd* p = entry.mutable_pidfd();
      p->set_exited(true);
      p->set_flags(fd.fdinfo.flags);
      return {};
    }
    if (pid == 0)
      return failf("{} is a pidfd to a process in a pid namespace minicriu cannot see; close it "
                   "before the dump", fd.what);
    bool inside = std::find(env.tree_tids.begin(), env.tree_tids.end(), static_cast<pid_t>(pid)) !=
                  env.tree_tids.end();
    if (!inside)
      return failf("{} is a pidfd to pid {}, which is outside the dumped tree and would not come "
                   "back with its pid; close it before the dump, or dump a tree that contains pid {}",
                   fd.what, pid, pid);
    img::PidFd* p = entry.mutable_pidfd();
    p->set_pid(static_cast<uint32_t>(pid));
    p->set_flags(fd.fdinfo.flags);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_pidfd(); }

  Status load(const RestoreEnv& env) override {
    checkpoint_ = &env.checkpoint;
    for (auto& f : env.checkpoint.files)
      if (f.has_pidfd() && !f.pidfd().exited() && !env.checkpoint.process(static_cast<pid_t>(f.pidfd().pid())) &&
          !thread_of_tree(static_cast<pid_t>(f.pidfd().pid())))
        return failf("file {}: a pidfd to pid {}, which is not in the tree; the images are damaged", f.id(),
                     f.pidfd().pid());
    return {};
  }

  // The pidfds to exited processes, made once in the restoring program, before
  // the tree (no pid of it can be taken for a moment).
  Status create_shared(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!f.has_pidfd() || !f.pidfd().exited()) continue;
      ASSIGN_OR_RETURN(UniqueFd fd, with_context(exited_pidfd(f.pidfd().flags() & kPidfdNonblock),
                                                 fmt::format("file {}", f.id())));
      exited_.emplace(f.id(), move_fd_above(std::move(fd), env.fd_floor));
    }
    return {};
  }

  // A pidfd to a process of the tree can only be opened once that process
  // exists: each holder opens its own. Their one open file description
  // becomes one per process; a pidfd's description has no state but its
  // O_NONBLOCK, which each gets as dumped.
  bool opens_before_tree(const img::FileEntry& entry) const override { return entry.pidfd().exited(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::PidFd& p = entry.pidfd();
    if (p.exited()) {
      auto it = exited_.find(entry.id());
      if (it == exited_.end()) return failf("file {}: the pidfd to an exited process was not made", entry.id());
      UniqueFd fd(::fcntl(it->second.get(), F_DUPFD_CLOEXEC, 0));
      if (!fd) return failf_errno("file {}: dup of the pidfd to an exited process", entry.id());
      return fd;
    }
    unsigned flags = p.flags() & (kPidfdNonblock | kPidfdThread);
    // pidfd_open sets close-on-exec itself, as the fd table wants for our handle.
    // A process of the tree another branch of it is still making: wait for it.
    auto deadline = std::chrono::steady_clock::now() + kWaitForProcess;
    for (;;) {
      UniqueFd fd(sys::pidfd_open(static_cast<pid_t>(p.pid()), flags));
      if (fd) return fd;
      if (errno != ESRCH || std::chrono::steady_clock::now() > deadline)
        return failf_errno("file {}: cannot open a pidfd to pid {}{}", entry.id(), p.pid(),
                           errno == ESRCH ? " (no such process: it was not restored in time)" : "");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::string describe(const img::FileEntry& f) const override {
    if (f.pidfd().exited())
      return fmt::format("pidfd (to a process that had exited and been reaped, flags {:#o})", f.pidfd().flags());
    return fmt::format("pidfd (pid {}, flags {:#o})", f.pidfd().pid(), f.pidfd().flags());
  }

 private:
  bool thread_of_tree(pid_t tid) const {
    for (auto& p : checkpoint_->processes)
      for (uint32_t t : p.entry.tids())
        if (static_cast<pid_t>(t) == tid) return true;
    return false;
  }

  const Checkpoint* checkpoint_ = nullptr;
  std::map<uint32_t, UniqueFd> exited_;  // file id -> a pidfd to a reaped child
};

}  // namespace

std::unique_ptr<Kind> make_pidfd_kind() { return std::make_unique<PidFdKind>(); }

}  // namespace minicriu
