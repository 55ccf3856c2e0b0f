// Shared fd tables and fs state (see task_sharing.hpp). kcmp(2) KCMP_FILES
// and KCMP_FS tell whether two tasks have the same files_struct or fs_struct;
// the dump asks it of each process and its parent, of each thread and its
// leader, of every other pair of the tree, and of the tree against every
// other process of the system: only a process sharing with its parent (the
// way clone() made it) can be made again, by a clone from that parent.
#include "restorer/task_sharing.hpp"

#include <linux/kcmp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "base/syscalls.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

uint64_t sharing_flags(const img::ProcessEntry& child) {
  return (child.files_of_parent() ? CLONE_FILES : 0) | (child.fs_of_parent() ? CLONE_FS : 0);
}

int restore_fd_floor(const Checkpoint& c) {
  int floor = 3;
  for (auto& p : c.processes)
    for (auto& f : p.fds) floor = std::max(floor, f.fd() + 1);
  return floor;
}

// ---- dump ------------------------------------------------------------------

namespace {

struct Shared {
  int type;            // KCMP_FILES or KCMP_FS
  const char* what;    // for messages
  const char* flag;
  bool (img::ProcessEntry::*of_parent)() const;
};
constexpr Shared kFiles{KCMP_FILES, "fd table", "CLONE_FILES", &img::ProcessEntry::files_of_parent};
constexpr Shared kFs{KCMP_FS, "cwd, root and umask", "CLONE_FS", &img::ProcessEntry::fs_of_parent};

// 0 the same object, 1 or 2 ordered apart, 3 not comparable; -1 an error.
Result<bool> same(pid_t a, pid_t b, const Shared& s) {
  int r = sys::kcmp(a, b, s.type, 0, 0);
  if (r < 0) return failf_errno("kcmp of pids {} and {}", a, b);
  return r == 0;
}

class TaskSharingKind final : public Kind {
 public:
  const char* name() const override { return "shared fd table and fs"; }

  Status take_process(ProcessDump& p, DumpEnv&) override {
    for (const Shared* s : {&kFiles, &kFs}) {
      for (uint32_t tid : p.entry.tids()) {
        if (static_cast<pid_t>(tid) == p.pid) continue;
        ASSIGN_OR_RETURN(bool with_leader, same(p.pid, static_cast<pid_t>(tid), *s));
        if (!with_leader)
          return failf("pid {}: thread {} has its own {} (unshare({}), or cloned without {}); minicriu "
                       "restores one per process: end that thread, or dump when it shares its process's again",
                       p.pid, tid, s->what, s->flag, s->flag);
      }
      pid_t ppid = static_cast<pid_t>(p.entry.ppid());
      if (ppid == 0) continue;  // the root: its parent is outside (check() looks there)
      ASSIGN_OR_RETURN(bool with_parent, same(p.pid, ppid, *s));
      if (!with_parent) continue;
      if (s == &kFiles) p.entry.set_files_of_parent(true);
      else p.entry.set_fs_of_parent(true);
    }
    return {};
  }

  Status check(const DumpTree& tree, DumpEnv&) override {
    std::map<pid_t, const img::ProcessEntry*> live;
    for (const img::ProcessEntry* e : tree.processes)
      if (!e->zombie()) live[static_cast<pid_t>(e->pid())] = e;
    for (const Shared* s : {&kFiles, &kFs}) {
      // The process a shared object came down from (linked by of_parent).
      auto origin = [&](pid_t pid) {
        for (auto it = live.find(pid); it != live.end() && ((*it->second).*(s->of_parent))();)
          it = live.find(pid = static_cast<pid_t>(it->second->ppid()));
        return pid;
      };
      std::set<pid_t> origins;
      for (auto a = live.begin(); a != live.end(); ++a) {
        origins.insert(origin(a->first));
        for (auto b = std::next(a); b != live.end(); ++b) {
          if (origin(a->first) == origin(b->first)) continue;
          ASSIGN_OR_RETURN(bool shared, same(a->first, b->first, *s));
          if (shared)
            return failf("pid {} shares its {} ({}) with pid {}, which is not its parent (made with "
                         "CLONE_PARENT, or by a process that has left it since); minicriu makes such "
                         "sharing again only between a parent and its child: have one of them "
                         "unshare({}) before the dump", b->first, s->what, s->flag, a->first, s->flag);
        }
      }
      TRY(check_outside(origins, tree.pids, *s));
    }
    return {};
  }

  // ---- restore -------------------------------------------------------------

  Status load(const RestoreEnv& env) override {
    for (const ProcessImages& p : env.checkpoint.processes) {
      if (!sharing_flags(p.entry)) continue;
      const ProcessImages* parent = env.checkpoint.process(static_cast<pid_t>(p.entry.ppid()));
      if (p.entry.zombie() || !parent || parent->entry.zombie())
        return failf("pstree.img: pid {} shares with its parent {}, which is not a live process of the "
                     "checkpoint", p.entry.pid(), p.entry.ppid());
      if (p.entry.files_of_parent() && !same_fds(p.fds, parent->fds))
        return failf("pid {} shares the fd table of its parent {}, but their fd images differ",
                     p.entry.pid(), p.entry.ppid());
      if (p.entry.fs_of_parent() && p.core.umask() != parent->core.umask())
        return failf("pid {} shares the fs of its parent {}, but their umasks differ", p.entry.pid(),
                     p.entry.ppid());
    }
    return {};
  }

  // ---- show ----------------------------------------------------------------

  void describe_process(const ProcessImages& p, std::string& out) const override {
    if (p.entry.files_of_parent())
      out += fmt::format("  fd table: its parent's (CLONE_FILES): an fd either opens is the other's\n");
    if (p.entry.fs_of_parent()) out += "  cwd, root and umask: its parent's (CLONE_FS)\n";
  }

 private:
  static bool same_fds(const std::vector<img::FdEntry>& a, const std::vector<img::FdEntry>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
      if (a[i].fd() != b[i].fd() || a[i].file_id() != b[i].file_id() || a[i].cloexec() != b[i].cloexec())
        return false;
    return true;
  }

  // Sharing with a process that is not dumped cannot come back: the restored
  // tree would have a table (or cwd) of its own, which that process no longer
  // sees. Every process of the system is asked (minicriu's own included: a
  // runtime that links it may have cloned the tree with CLONE_FILES).
  static Status check_outside(const std::set<pid_t>& origins, const std::set<pid_t>& tree, const Shared& s) {
    ASSIGN_OR_RETURN(auto all, proc::list_numeric_dir("/proc"));
    for (int other : all) {
      if (tree.count(other)) continue;
      for (pid_t pid : origins) {
        int r = sys::kcmp(pid, other, s.type, 0, 0);
        if (r != 0) continue;  // apart, or gone (ESRCH) or a kernel thread
        return failf("pid {} shares its {} ({}) with pid {} ({}), which is outside the dumped tree; after a "
                     "restore they would no longer share it: dump the tree that holds both, or have one of "
                     "them unshare({}) before the dump", pid, s.what, s.flag, other, proc::comm_of(other), s.flag);
      }
    }
    return {};
  }
};

}  // namespace

std::unique_ptr<Kind> make_task_sharing_kind() { return std::make_unique<TaskSharingKind>(); }

// ---- restore: the link -----------------------------------------------------

namespace {

// One step on the link; SOCK_SEQPACKET keeps each whole.
struct LinkMsg {
  uint32_t step;
  int32_t err;
  uint32_t n_fds;
  int32_t fds[128];
  char text[1024];
};

const char* step_name(SharingStep s) {
  switch (s) {
    case SharingStep::inherited: return "inherited";
    case SharingStep::installed: return "installed";
    case SharingStep::prepared: return "prepared";
    case SharingStep::closed: return "closed";
    case SharingStep::failed: return "failed";
  }
  return "?";
}

Status send_step(int fd, SharingStep step, const std::vector<int>& fds, const Error* e = nullptr) {
  LinkMsg m{};
  m.step = static_cast<uint32_t>(step);
  if (fds.size() > std::size(m.fds)) return failf("{} fds to keep for a shared fd table, more than {}", fds.size(), std::size(m.fds));
  m.n_fds = static_cast<uint32_t>(fds.size());
  std::copy(fds.begin(), fds.end(), m.fds);
  if (e) {
    m.err = e->err();
    std::strncpy(m.text, e->message().c_str(), sizeof(m.text) - 1);
  }
  ssize_t n;
  do n = ::send(fd, &m, sizeof(m), MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(m))) return failf_errno("sending {} on a sharing link", step_name(step));
  return {};
}

Result<LinkMsg> receive_step(int fd) {
  LinkMsg m{};
  ssize_t n;
  do n = ::recv(fd, &m, sizeof(m), 0); while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(m))) return fail_errno("reading a sharing link");
  m.text[sizeof(m.text) - 1] = '\0';
  if (m.n_fds > std::size(m.fds)) return fail("a malformed message on a sharing link");
  return m;
}

}  // namespace

Result<SharingLink> SharingLink::make(pid_t child, uint64_t flags, int floor) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return failf_errno("socketpair for the link to pid {}", child);
  return SharingLink(child, flags, move_fd_above(UniqueFd(sv[0]), floor), move_fd_above(UniqueFd(sv[1]), floor));
}

bool SharingLink::files() const { return (flags_ & CLONE_FILES) != 0; }

Status SharingLink::tell_child(SharingStep step) { return send_step(parent_end_.get(), step, {}); }

Result<std::vector<int>> SharingLink::wait_child(SharingStep step) {
  pollfd p[2] = {{parent_end_.get(), POLLIN, 0}, {child_pidfd_.get(), POLLIN, 0}};
  for (;;) {
    int r = ::poll(p, child_pidfd_ ? 2 : 1, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failf_errno("waiting for its child {}", child_);
    // A message first: a child that failed said so before it died.
    if (p[0].revents & POLLIN) break;
    if (p[1].revents) return failf("its child {}, which shares its {}, died while being restored", child_,
                                   files() ? "fd table" : "cwd");
  }
  ASSIGN_OR_RETURN(LinkMsg m, receive_step(parent_end_.get()));
  if (m.step == static_cast<uint32_t>(SharingStep::failed))
    return std::unexpected(Error(fmt::format("its child {}", m.text), m.err));
  if (m.step != static_cast<uint32_t>(step))
    return failf("its child {} said {} on the sharing link, {} was due", child_,
                 step_name(static_cast<SharingStep>(m.step)), step_name(step));
  return std::vector<int>(m.fds, m.fds + m.n_fds);
}

Status SharingLink::tell_parent(SharingStep step, const std::vector<int>& fds) {
  return send_step(child_end_.get(), step, fds);
}

void SharingLink::tell_parent_failed(const Error& e) { (void)send_step(child_end_.get(), SharingStep::failed, {}, &e); }

Status SharingLink::wait_parent(SharingStep step) {
  ASSIGN_OR_RETURN(LinkMsg m, receive_step(child_end_.get()));
  if (m.step != static_cast<uint32_t>(step))
    return failf("its parent said {} on the sharing link, {} was due", step_name(static_cast<SharingStep>(m.step)),
                 step_name(step));
  return {};
}

void SharingLink::close() {
  parent_end_.reset();
  child_end_.reset();
  child_pidfd_.reset();
}

}  // namespace minicriu
