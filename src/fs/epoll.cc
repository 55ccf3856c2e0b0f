// epoll: an interest list of (target fd, events, data). fdinfo shows one
// "tfd:" line per entry (fs/eventpoll.c, ep_show_fdinfo), with the fd number
// the target was added under in the process that added it.
//
// An entry stays as long as its target file is open anywhere, even after the
// fd it was added under was closed or now holds another file; such an entry
// cannot be added again from the fd table, so the dump refuses the epoll
// (kcmp KCMP_EPOLL_TFD tells whether the fd still holds the entry's file).
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

class EpollKind final : public Kind {
 public:
  const char* name() const override { return "epoll"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "eventpoll"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    ASSIGN_OR_RETURN(auto lines, parse_tfd_lines(fd));
    img::EventPoll* e = entry.mutable_epoll();
    e->set_flags(fd.fdinfo.flags);
    for (size_t i = 0; i < lines.size(); i++) {
      const TfdLine& t = lines[i];
      uint32_t toff = 0;
      for (size_t j = 0; j < i; j++) toff += lines[j].tfd == t.tfd;
      ASSIGN_OR_RETURN(bool inside, target_in_table(fd, t, toff));
      if (!inside)
        return failf("{} is an epoll that watches a file added as fd {}, which fd {} no longer "
                     "holds (closed, or reused for another file); such an entry cannot be added "
                     "again: remove it with EPOLL_CTL_DEL before closing the fd", fd.what, t.tfd,
                     t.tfd);
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

  Status open_after(const img::FileEntry& entry, int fd, const FdLookup& lookup) override {
    for (const img::EpollTarget& t : entry.epoll().targets()) {
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
      targets += fmt::format("{}fd {} events {:#x} data {:#x}", targets.empty() ? "" : "; ", t.fd(),
                             t.events(), t.data());
    return fmt::format("epoll ({} target(s){}{})", f.epoll().targets_size(), targets.empty() ? "" : ": ",
                       targets);
  }
};

}  // namespace

std::unique_ptr<Kind> make_epoll_kind() { return std::make_unique<EpollKind>(); }

}  // namespace minicriu
