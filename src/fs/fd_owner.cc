// Signal-driven I/O (fcntl(2) F_SETOWN, F_SETOWN_EX, F_SETSIG, O_ASYNC), on
// any file (pipes, sockets, ttys, inotify...): who an open file description
// signals when it becomes ready (a thread, a process or a process group),
// with which signal, and whether O_ASYNC asks it to. The owner and the signal
// are the description's, read at dump on the dumper's copy of it
// (F_GETOWN_EX, F_GETSIG); O_ASYNC is in fdinfo's flags. An owner that is
// not in the tree is refused: its number means nothing after a restore, or
// another process.
//
// Restore, once every fd is in place: O_ASYNC first, in the holder itself
// (the kernel's fasync entry remembers the fd it was set through, the si_fd
// of a F_SETSIG signal), then, once every process and thread of the tree
// exists, the owner and the signal on a copy of the description
// (pidfd_getfd). Setting the owner and O_ASYNC may both make the caller the
// owner (F_SETLEASE, a tty's fasync); the dumped owner is set last, so it is
// the one that stays. F_SETOWN records the caller's uid and euid, which later
// decide whether SIGIO may reach the owner (sigio_perm): the restore sets the
// owner as root, which may always.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "base/syscalls.hpp"
#include "images/checkpoint.hpp"
#include "images/image_set.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

inline constexpr ImageKind kFdOwnersImage{12, "fd-owners"};
std::string fd_owners_image(const ImageDir& dir) { return dir.file("fd-owners.img"); }

const char* owner_words(uint32_t type) {
  switch (type) {
    case F_OWNER_TID: return "thread";
    case F_OWNER_PID: return "process";
    case F_OWNER_PGRP: return "process group";
    default: return "?";
  }
}

std::string describe_owner(const img::FdOwner& o) {
  std::string out = o.owner() ? fmt::format("owner {} {}", owner_words(o.owner_type()), o.owner())
                              : std::string("no owner");
  out += o.signum() ? fmt::format(", signal {} (F_SETSIG)", o.signum()) : std::string(", SIGIO");
  if (o.async()) out += ", O_ASYNC";
  return out;
}

class FdOwnerKind final : public Kind {
 public:
  const char* name() const override { return "signal-driven I/O owner"; }

  // ---- dump ----------------------------------------------------------------

  Status observe_fd(const FdDumpInfo& fd, uint32_t file_id, DumpEnv&) override {
    // An O_PATH fd signals nobody: fcntl refuses it F_GETOWN_EX (EBADF).
    if (fd.fdinfo.flags & O_PATH) return {};
    if (!seen_.insert(file_id).second) return {};
    f_owner_ex owner{};
    if (::fcntl(fd.local_fd, F_GETOWN_EX, &owner) != 0) return failf_errno("{}: F_GETOWN_EX", fd.what);
    int signum = ::fcntl(fd.local_fd, F_GETSIG);
    if (signum < 0) return failf_errno("{}: F_GETSIG", fd.what);
    bool async = (fd.fdinfo.flags & O_ASYNC) != 0;
    // A lease makes its setter the owner (lease_setup): the dumped owner,
    // none included, must be set again after it.
    bool lease = fd.fdinfo.text.find(" LEASE ") != std::string::npos;
    if (owner.pid == 0 && signum == 0 && !async && !lease) return {};
    img::FdOwner o;
    o.set_file_id(file_id);
    o.set_pid(static_cast<uint32_t>(fd.pid));
    o.set_fd(fd.fd);
    o.set_owner_type(static_cast<uint32_t>(owner.type));
    o.set_owner(static_cast<uint32_t>(owner.pid > 0 ? owner.pid : 0));
    o.set_signum(static_cast<uint32_t>(signum));
    o.set_async(async);
    o.set_path(fd.link);
    owners_.push_back(std::move(o));
    what_.push_back(fd.what);
    return {};
  }

  Status check(const DumpTree& tree, DumpEnv& env) override {
    std::set<pid_t> tids(env.tree_tids.begin(), env.tree_tids.end());
    for (size_t i = 0; i < owners_.size(); i++) {
      const img::FdOwner& o = owners_[i];
      pid_t id = static_cast<pid_t>(o.owner());
      if (id == 0 || in_tree(o, tree, tids)) continue;
      return failf("{} ({}): its signal-driven I/O owner (F_SETOWN) is {} {} ({}), outside the dumped tree; "
                   "after a restore that number names another process or none: point it at a process of "
                   "the tree (or at none, F_SETOWN 0) before the dump, or dump the tree that holds {}",
                   what_[i], o.path(), owner_words(o.owner_type()), id, proc::comm_of(id), id);
    }
    return {};
  }

  Status commit(ImageSet& images, DumpEnv& env) override {
    return images.write(fd_owners_image(env.dir), kFdOwnersImage, owners_);
  }

  // ---- restore -------------------------------------------------------------

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(owners_, read_all_images<img::FdOwner>(fd_owners_image(env.dir), kFdOwnersImage));
    for (const img::FdOwner& o : owners_)
      TRY(with_context(validate(o, env.checkpoint), fd_owners_image(env.dir)));
    return {};
  }

  // F_SETFL calls the file's fasync() only when O_ASYNC changes: the kind
  // that opened the file may have left the flag set without it (open(2)
  // keeps O_ASYNC but never calls fasync), so it is cleared and set again.
  Status restore_process_last(TaskEnv& task) override {
    for (const img::FdOwner& o : owners_) {
      if (o.pid() != task.process.entry.pid() || !o.async()) continue;
      int flags = ::fcntl(o.fd(), F_GETFL);
      if (flags < 0 || ::fcntl(o.fd(), F_SETFL, flags & ~O_ASYNC) != 0 ||
          ::fcntl(o.fd(), F_SETFL, flags | O_ASYNC) != 0)
        return failf_errno("fd {} ({}): setting O_ASYNC again", o.fd(), o.path());
    }
    return {};
  }

  // Every process and thread of the tree exists now, waiting for go.
  Status resume(const RestoreEnv&) override {
    for (const img::FdOwner& o : owners_) TRY(set_owner(o));
    return {};
  }

  // ---- show ----------------------------------------------------------------

  void describe_process(const ProcessImages& p, std::string& out) const override {
    for (const img::FdOwner& o : owners_)
      if (o.pid() == p.entry.pid()) out += fmt::format("  fd {} ({}): {}\n", o.fd(), o.path(), describe_owner(o));
  }

  void add_to_view(img::CheckpointView& view) const override {
    for (const img::FdOwner& o : owners_) *view.add_fd_owners() = o;
  }

 private:
  static bool in_tree(const img::FdOwner& o, const DumpTree& tree, const std::set<pid_t>& tids) {
    pid_t id = static_cast<pid_t>(o.owner());
    switch (o.owner_type()) {
      case F_OWNER_TID: return tids.count(id) > 0;
      case F_OWNER_PID: return tree.pids.count(id) > 0;
      case F_OWNER_PGRP:
        // Only a group whose leader is in the tree is made again.
        return tree.pids.count(id) > 0 && [&] {
          for (const img::ProcessEntry* e : tree.processes)
            if (static_cast<pid_t>(e->pid()) == id) return e->pgid() == e->pid();
          return false;
        }();
      default: return false;
    }
  }

  static Status validate(const img::FdOwner& o, const Checkpoint& c) {
    const ProcessImages* p = c.process(static_cast<pid_t>(o.pid()));
    if (!p || p->entry.zombie()) return failf("an owner of pid {}, which is not a live process of the checkpoint", o.pid());
    bool held = false;
    for (const img::FdEntry& f : p->fds) held |= f.fd() == o.fd() && f.file_id() == o.file_id();
    if (!held) return failf("pid {}: an owner of fd {} (file {}), which it does not hold", o.pid(), o.fd(), o.file_id());
    if (o.owner_type() > F_OWNER_PGRP) return failf("pid {}: fd {}: owner type {}", o.pid(), o.fd(), o.owner_type());
    if (o.signum() > 64) return failf("pid {}: fd {}: signal {}", o.pid(), o.fd(), o.signum());
    return {};
  }

  static Status set_owner(const img::FdOwner& o) {
    std::string what = fmt::format("pid {}: fd {} ({})", o.pid(), o.fd(), o.path());
    UniqueFd pidfd(sys::pidfd_open(static_cast<pid_t>(o.pid()), 0));
    if (!pidfd) return failf_errno("{}: pidfd_open", what);
    UniqueFd file(sys::pidfd_getfd(pidfd.get(), o.fd(), 0));
    if (!file) return failf_errno("{}: pidfd_getfd", what);
    f_owner_ex owner{static_cast<__pid_type>(o.owner_type()), static_cast<pid_t>(o.owner())};
    if (::fcntl(file.get(), F_SETOWN_EX, &owner) != 0)
      return failf_errno("{}: F_SETOWN_EX to {} {}", what, owner_words(o.owner_type()), o.owner());
    if (::fcntl(file.get(), F_SETSIG, static_cast<int>(o.signum())) != 0)
      return failf_errno("{}: F_SETSIG {}", what, o.signum());
    return {};
  }

  std::vector<img::FdOwner> owners_;
  std::vector<std::string> what_;  // dump side: who holds each, for messages
  std::set<uint32_t> seen_;
};

}  // namespace

std::unique_ptr<Kind> make_fd_owner_kind() { return std::make_unique<FdOwnerKind>(); }

}  // namespace minicriu
