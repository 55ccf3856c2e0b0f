// epoll: an interest list of (target fd, events, data). fdinfo shows one
// "tfd:" line per entry (fs/eventpoll.c, ep_show_fdinfo), with the fd number
// the target was added under in the process that added it.
//
// An entry stays as long as its target file is open anywhere, even after the
// fd it was added under was closed or now holds another file (kcmp
// KCMP_EPOLL_TFD tells whether the fd still holds the entry's file). Such an
// entry's file is looked for among every fd of the tree (kcmp again, against
// each fd the dump sees) and recorded as that file: at restore it is put at
// the entry's number for the EPOLL_CTL_ADD (the kernel keys an entry by file
// and number), and whatever held that number is put back. Only an entry whose
// file no fd of the tree holds any more (a process outside does, or an
// epoll's entry on another epoll...) is refused.
//
// Restore is two passes: open() creates an empty epoll, and open_after(),
// once every fd of the process is in place, adds each target with its events
// and data. Not restored: the ready list itself. Adding a target polls it
// once, so a level-triggered entry reports what it reported before; an
// edge-triggered entry whose target is ready reports one edge after the
// restore even if the application had consumed it before the dump.
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <sstream>

#include "base/syscalls.hpp"
#include "fs/anon_inode.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

struct TfdLine {
  int tfd = -1;
  uint32_t events = 0;
  uint64_t data = 0;
  uint64_t ino = 0;
  uint32_t sdev = 0;  // the kernel's dev_t: major << 20 | minor
};

// "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x"
Result<std::vector<TfdLine>> parse_tfd_lines(const FdDumpInfo& fd) {
  std::vector<TfdLine> out;
  std::istringstream in(fd.fdinfo.text);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("tfd:")) continue;
    TfdLine t;
    long long pos = 0;
    unsigned long long data = 0;
    unsigned long ino = 0;
    if (std::sscanf(line.c_str(), "tfd: %d events: %x data: %llx pos:%lli ino:%lx sdev:%x", &t.tfd,
                    &t.events, &data, &pos, &ino, &t.sdev) != 6)
      return failf("{} ({}): cannot read the fdinfo line \"{}\"", fd.what, fd.link, line);
    t.data = data;
    t.ino = ino;
    out.push_back(t);
  }
  return out;
}

// Whether fd number t.tfd of the process holds the file of the entry: the
// toff-th entry with that number, in the order fdinfo lists them (kcmp
// counts in the same tree walk).
Result<bool> target_in_table(const FdDumpInfo& fd, const TfdLine& t, uint32_t toff) {
  kcmp_epoll_slot slot{static_cast<uint32_t>(fd.fd), static_cast<uint32_t>(t.tfd), toff};
  int r = sys::kcmp(fd.pid, fd.pid, KCMP_EPOLL_TFD, static_cast<unsigned long>(t.tfd),
                    reinterpret_cast<unsigned long>(&slot));
  if (r == 0) return true;
  if (r > 0 || errno == EBADF) return false;  // another file there, or no fd at all
  if (errno != ENOSYS && errno != EOPNOTSUPP)
    return failf_errno("{}: kcmp of epoll entry tfd {}", fd.what, t.tfd);
  // Without kcmp (no CONFIG_CHECKPOINT_RESTORE) the inode is the best clue.
  struct stat st;
  if (::stat(proc::pid_path(fd.pid, fmt::format("fd/{}", t.tfd)).c_str(), &st) != 0) return false;
  return st.st_ino == t.ino && st.st_dev == makedev(t.sdev >> 20, t.sdev & 0xfffff);
}

// An entry whose fd no longer holds its file, looked for in the tree.
struct Orphan {
  uint32_t epoll_id;   // the epoll's entry in files.img
  int target;          // the index of the target in it
  pid_t pid;           // the epoll's holder, as fd efd
  kcmp_epoll_slot slot;
  std::string what;    // for the refusal
  uint32_t file_id = 0;
};

// One fd of the tree, as observe_fd() saw it.
struct SeenFd {
  pid_t pid;
  int fd;
  uint32_t file_id;
};

bool holds_target(pid_t pid, int fd, const Orphan& o) {
  kcmp_epoll_slot slot = o.slot;
  return sys::kcmp(pid, o.pid, KCMP_EPOLL_TFD, static_cast<unsigned long>(fd),
                   reinterpret_cast<unsigned long>(&slot)) == 0;
}

class EpollKind final : public Kind {
 public:
  const char* name() const override { return "epoll"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "eventpoll"); }

  Status observe_fd(const FdDumpInfo& fd, uint32_t file_id, DumpEnv&) override {
    if (fd.fd < 0) return {};
    seen_.push_back({fd.pid, fd.fd, file_id});
    for (Orphan& o : orphans_)
      if (!o.file_id && holds_target(fd.pid, fd.fd, o)) o.file_id = file_id;
    return {};
  }

  // Every fd of the tree was seen: each orphaned entry has its file, or is
  // refused.
  Status check(const DumpTree&, DumpEnv& env) override {
    for (const Orphan& o : orphans_) {
      if (!o.file_id)
        return failf("{} is an epoll that watches a file added as fd {}, which fd {} no longer holds "
                     "(closed, or reused for another file), and no fd of the dumped tree holds that file "
                     "any more; such an entry cannot be added again: remove it with EPOLL_CTL_DEL before "
                     "closing the fd, or dump the tree that holds the file", o.what, o.slot.tfd, o.slot.tfd);
      for (auto& f : *env.files)
        if (f.id() == o.epoll_id) f.mutable_epoll()->mutable_targets(o.target)->set_file_id(o.file_id);
    }
    return {};
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    ASSIGN_OR_RETURN(auto lines, parse_tfd_lines(fd));
    img::EventPoll* e = entry.mutable_epoll();
    e->set_flags(fd.fdinfo.flags);
    for (size_t i = 0; i < lines.size(); i++) {
      const TfdLine& t = lines[i];
      uint32_t toff = 0;
      for (size_t j = 0; j < i; j++) toff += lines[j].tfd == t.tfd;
      ASSIGN_OR_RETURN(bool inside, target_in_table(fd, t, toff));
      if (!inside) {
        Orphan o{entry.id(), e->targets_size(), fd.pid,
                 kcmp_epoll_slot{static_cast<uint32_t>(fd.fd), static_cast<uint32_t>(t.tfd), toff}, fd.what};
        for (const SeenFd& s : seen_)
          if (!o.file_id && holds_target(s.pid, s.fd, o)) o.file_id = s.file_id;
        orphans_.push_back(std::move(o));
      }
      img::EpollTarget* target = e->add_targets();
      target->set_fd(t.tfd);
      target->set_events(t.events);
      target->set_data(t.data);
    }
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_epoll(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    UniqueFd fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!fd) return failf_errno("file {}: cannot create an epoll", entry.id());
    if ((entry.epoll().flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0)
      return failf_errno("file {}: cannot make the epoll non-blocking", entry.id());
    return fd;
  }

  void references(const img::FileEntry& entry, std::vector<uint32_t>& file_ids) const override {
    for (const img::EpollTarget& t : entry.epoll().targets())
      if (t.file_id()) file_ids.push_back(t.file_id());
  }

  Status open_after(const img::FileEntry& entry, int fd, const FdLookup& lookup) override {
    for (const img::EpollTarget& t : entry.epoll().targets()) {
      if (t.file_id()) {
        TRY(add_orphan(entry, fd, t, lookup));
        continue;
      }
      int target = lookup(t.fd());
      if (target < 0)
        return failf("file {}: the epoll watches fd {}, which the restored process does not have",
                     entry.id(), t.fd());
      epoll_event ev{};
      ev.events = t.events();
      ev.data.u64 = t.data();
      if (::epoll_ctl(fd, EPOLL_CTL_ADD, target, &ev) != 0)
        return failf_errno("file {}: cannot add fd {} (events {:#x}) to the epoll", entry.id(),
                           t.fd(), t.events());
    }
    return {};
  }

  std::string describe(const img::FileEntry& f) const override {
    std::string targets;
    for (auto& t : f.epoll().targets())
      targets += fmt::format("{}fd {}{} events {:#x} data {:#x}", targets.empty() ? "" : "; ", t.fd(),
                             t.file_id() ? fmt::format(" (closed since: file {})", t.file_id()) : "",
                             t.events(), t.data());
    return fmt::format("epoll ({} target(s){}{})", f.epoll().targets_size(), targets.empty() ? "" : ": ",
                       targets);
  }

 private:
  // The entry's file goes at its number for the EPOLL_CTL_ADD; what held the
  // number (another file, or nothing) is put back after.
  static Status add_orphan(const img::FileEntry& entry, int epfd, const img::EpollTarget& t,
                           const FdLookup& lookup) {
    int file = lookup.file(t.file_id());
    if (file < 0)
      return failf("file {}: the epoll watches file {} (once fd {}), which the restored process was not given",
                   entry.id(), t.file_id(), t.fd());
    int held_flags = ::fcntl(t.fd(), F_GETFD);
    UniqueFd saved;
    if (held_flags >= 0) {
      saved.reset(::fcntl(t.fd(), F_DUPFD_CLOEXEC, 0));
      if (!saved) return failf_errno("file {}: cannot set fd {} aside", entry.id(), t.fd());
    }
    if (::dup3(file, t.fd(), O_CLOEXEC) < 0)
      return failf_errno("file {}: cannot put file {} at fd {}", entry.id(), t.file_id(), t.fd());
    epoll_event ev{};
    ev.events = t.events();
    ev.data.u64 = t.data();
    int r = ::epoll_ctl(epfd, EPOLL_CTL_ADD, t.fd(), &ev);
    int e = errno;
    // Put the number back as it was.
    if (saved) {
      if (::dup3(saved.get(), t.fd(), (held_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
        return failf_errno("file {}: cannot put fd {} back", entry.id(), t.fd());
    } else {
      ::close(t.fd());
    }
    if (r != 0)
      return std::unexpected(Error(fmt::format("file {}: cannot add file {} as fd {} (events {:#x}) to the epoll",
                                               entry.id(), t.file_id(), t.fd(), t.events()), e));
    return {};
  }

  std::vector<SeenFd> seen_;
  std::vector<Orphan> orphans_;
};

}  // namespace

std::unique_ptr<Kind> make_epoll_kind() { return std::make_unique<EpollKind>(); }

}  // namespace minicriu
