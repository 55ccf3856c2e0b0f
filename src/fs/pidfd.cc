// pidfd: a handle on one process (or, with PIDFD_THREAD, one thread). It can
// only come back pointing at the same process if that process comes back with
// the same pid, which is true of the dumped tree and of nothing else: a pidfd
// to any other process is refused at dump. Restored with pidfd_open(pid),
// which needs the tree to exist before the files are opened (it does: tasks
// open their files after the whole tree was created).
#include <fcntl.h>

#include <algorithm>
#include <cstdlib>

#include "base/syscalls.hpp"
#include "fs/anon_inode.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

// The pidfd_open flags are file flags: PIDFD_NONBLOCK is O_NONBLOCK and
// PIDFD_THREAD (Linux 6.9, newer than bookworm's headers) is O_EXCL.
constexpr uint32_t kPidfdNonblock = O_NONBLOCK;
constexpr uint32_t kPidfdThread = O_EXCL;

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
    if (pid < 0)
      return failf("{} is a pidfd to a process that has exited and been reaped; it cannot be "
                   "restored: close it in the application before the dump", fd.what);
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

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::PidFd& p = entry.pidfd();
    unsigned flags = p.flags() & (kPidfdNonblock | kPidfdThread);
    // pidfd_open sets close-on-exec itself, as the fd table wants for our handle.
    UniqueFd fd(sys::pidfd_open(static_cast<pid_t>(p.pid()), flags));
    if (!fd)
      return failf_errno("file {}: cannot open a pidfd to pid {}{}", entry.id(), p.pid(),
                         errno == ESRCH ? " (no such process: it should have been restored first)" : "");
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    return fmt::format("pidfd (pid {}, flags {:#o})", f.pidfd().pid(), f.pidfd().flags());
  }
};

}  // namespace

std::unique_ptr<Kind> make_pidfd_kind() { return std::make_unique<PidFdKind>(); }

}  // namespace minicriu
