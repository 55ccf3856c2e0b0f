#include "fs/fd_table.hpp"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fault.hpp"
#include "base/syscalls.hpp"
#include "base/unique_fd.hpp"
#include "parasite/parasite_session.hpp"

namespace minicriu {

Result<uint32_t> FileRegistry::add_entry(const FdDumpInfo& info) {
  ASSIGN_OR_RETURN(Kind * kind, kinds_.taker(info));
  // The id is taken first: a kind may add files while it takes this one
  // (the fds in flight in a socket's queue, add_unheld()).
  uint32_t id = static_cast<uint32_t>(entries_.size() + 1);
  entries_.emplace_back().set_id(id);
  img::FileEntry entry;
  entry.set_id(id);
  TRY(fault_point("take", kind->name()));
  TRY(kind->take(info, entry, env_));
  entries_[id - 1] = std::move(entry);
  return id;
}

Result<uint32_t> FileRegistry::find_or_add(const FdDumpInfo& fd) {
  for (auto& s : seen_) {
    if (s.dev != fd.st.st_dev || s.ino != fd.st.st_ino) continue;
    if (sys::kcmp(s.pid, fd.pid, KCMP_FILE, static_cast<unsigned long>(s.fd),
                  static_cast<unsigned long>(fd.fd)) == 0)
      return s.id;
  }
  ASSIGN_OR_RETURN(uint32_t id, add_entry(fd));
  seen_.push_back({fd.pid, fd.fd, fd.st.st_dev, fd.st.st_ino, id});
  return id;
}

Result<uint32_t> FileRegistry::add(const FdDumpInfo& fd) {
  ASSIGN_OR_RETURN(uint32_t id, find_or_add(fd));
  held_ids_.insert(id);
  TRY(kinds_.each("observe_fd", [&](Kind& k) { return k.observe_fd(fd, id, env_); }));
  return id;
}

Result<uint32_t> FileRegistry::add_unheld(int local_fd, const std::string& what) {
  // A socket in flight whose own queue holds sockets in flight...: a cycle
  // (a socket sent over itself) would never end.
  if (taking_unheld_ >= 4)
    return failf("{}: files in flight inside files in flight nest more than 4 deep (a unix socket sent "
                 "over itself, or a cycle of them), which minicriu cannot checkpoint; let the application "
                 "receive them before the dump", what);
  UniqueFd kept(::fcntl(local_fd, F_DUPFD_CLOEXEC, 3));
  if (!kept) return failf_errno("{}: dup", what);
  FdDumpInfo info;
  info.pid = ::getpid();
  info.fd = kept.get();
  info.what = what;
  info.local_fd = kept.get();
  ASSIGN_OR_RETURN(info.link, proc::read_link(fmt::format("/proc/self/fd/{}", kept.get())));
  ASSIGN_OR_RETURN(auto text, proc::read_file(fmt::format("/proc/self/fdinfo/{}", kept.get())));
  ASSIGN_OR_RETURN(info.fdinfo, with_context(proc::parse_fdinfo(text), what));
  info.fdinfo.flags &= ~static_cast<uint32_t>(O_CLOEXEC);  // ours; in flight it has no fd
  // What the kernel keeps on an open file besides its kind's state (locks,
  // the SIGIO owner) is restored through an fd of the tree (observe_fd):
  // checked once the whole tree is seen (drop_unheld).
  std::string keeps;
  if (!(info.fdinfo.flags & O_PATH)) {
    f_owner_ex owner{};
    if ((::fcntl(kept.get(), F_GETOWN_EX, &owner) == 0 && owner.pid != 0) || ::fcntl(kept.get(), F_GETSIG) > 0 ||
        (info.fdinfo.flags & O_ASYNC))
      keeps = "a signal-driven I/O owner (F_SETOWN, F_SETSIG or O_ASYNC)";
    else if (info.fdinfo.text.find("lock:") != std::string::npos)
      keeps = "a file lock";
  }
  if (::fstat(kept.get(), &info.st) != 0) return failf_errno("{}: fstat", what);
  unheld_.push_back(std::move(kept));
  taking_unheld_++;
  auto id = find_or_add(info);
  taking_unheld_--;
  if (id && !keeps.empty()) unheld_keeps_.push_back({*id, fmt::format("{} ({}) has {}", what, info.link, keeps)});
  return id;
}

Status FileRegistry::drop_unheld() {
  pid_t self = ::getpid();
  std::erase_if(seen_, [self](const Seen& s) { return s.pid == self; });
  unheld_.clear();
  for (auto& [id, what] : unheld_keeps_)
    if (!held_ids_.count(id))
      return failf("{}, which minicriu restores only through an fd of the tree, and no fd of the tree holds "
                   "the file; let the application receive it before the dump", what);
  return {};
}

Result<uint32_t> FileRegistry::add_link(pid_t pid, const std::string& link_name) {
  std::string path = proc::pid_path(pid, link_name);
  ASSIGN_OR_RETURN(auto link, proc::read_link(path));
  // Our own description of it (the magic link reaches deleted files too).
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("pid {}: cannot open {}", pid, link_name);
  FdDumpInfo info;
  info.pid = pid;
  info.what = fmt::format("pid {}: {}", pid, link_name);
  info.link = link;
  info.local_fd = fd.get();
  if (::fstat(fd.get(), &info.st) != 0) return failf_errno("pid {}: cannot stat {}", pid, link_name);
  info.fdinfo.flags = S_ISDIR(info.st.st_mode) ? (O_RDONLY | O_DIRECTORY) : O_RDONLY;
  return add_entry(info);
}

Result<uint32_t> FileRegistry::add_deleted_mapping(pid_t pid, uint64_t start, uint64_t end,
                                                   bool writable_shared) {
  std::string path = proc::pid_path(pid, fmt::format("map_files/{:x}-{:x}", start, end));
  std::string what = fmt::format("pid {}: mapping {:x}-{:x}", pid, start, end);
  auto link = proc::read_link(path);
  if (!link && link.error().err() == EPERM)
    return std::unexpected(Error(fmt::format("{}: a mapping of a deleted file is reached through {}, which needs "
                                             "CAP_CHECKPOINT_RESTORE; minicriu runs without it: dump as root or "
                                             "with the capability", what, path), EPERM));
  if (!link) return std::unexpected(link.error());
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("{}: cannot open {}", what, path);
  FdDumpInfo info;
  info.pid = pid;
  info.what = what;
  info.link = *link;
  info.local_fd = fd.get();
  if (::fstat(fd.get(), &info.st) != 0) return failf_errno("{}: fstat", what);
  info.fdinfo.flags = writable_shared ? O_RDWR : O_RDONLY;
  uint32_t flags = info.fdinfo.flags;
  for (auto& e : entries_)
    if (e.has_reg() && e.reg().ghost_id() && e.reg().ino() == info.st.st_ino &&
        e.reg().dev() == info.st.st_dev && e.reg().flags() == flags && e.reg().pos() == 0)
      return e.id();
  return add_entry(info);
}

Result<std::vector<FdListing>> list_fds(pid_t pid) {
  ASSIGN_OR_RETURN(auto fds, proc::list_numeric_dir(proc::pid_path(pid, "fd")));
  std::vector<FdListing> out;
  for (int fd : fds) {
    FdListing l{fd, {}, {}};
    ASSIGN_OR_RETURN(l.link, proc::read_link(proc::pid_path(pid, fmt::format("fd/{}", fd))));
    ASSIGN_OR_RETURN(auto text, proc::read_file(proc::pid_path(pid, fmt::format("fdinfo/{}", fd))));
    ASSIGN_OR_RETURN(l.fdinfo, with_context(proc::parse_fdinfo(text), fmt::format("pid {}: fd {}", pid, fd)));
    out.push_back(std::move(l));
  }
  return out;
}

Result<std::vector<img::FdEntry>> dump_fd_table(pid_t pid, const std::vector<FdListing>& fds,
                                                ParasiteSession& parasite, FileRegistry& registry) {
  std::vector<int32_t> numbers;
  for (auto& f : fds) numbers.push_back(f.fd);
  ASSIGN_OR_RETURN(auto local, parasite.fetch_fds(numbers));
  std::vector<img::FdEntry> out;
  for (size_t i = 0; i < fds.size(); i++) {
    FdDumpInfo info;
    info.pid = pid;
    info.fd = fds[i].fd;
    info.what = fmt::format("pid {}: fd {}", pid, info.fd);
    info.link = fds[i].link;
    info.fdinfo = fds[i].fdinfo;
    info.local_fd = local[i].get();
    if (::fstat(info.local_fd, &info.st) != 0) return failf_errno("pid {}: fd {}: fstat", pid, info.fd);
    ASSIGN_OR_RETURN(uint32_t id, registry.add(info));
    img::FdEntry e;
    e.set_fd(info.fd);
    e.set_file_id(id);
    e.set_cloexec((info.fdinfo.flags & O_CLOEXEC) != 0);
    out.push_back(e);
  }
  return out;
}

}  // namespace minicriu

// ---- restore ----------------------------------------------------------------

#include <sys/resource.h>

#include <set>

namespace minicriu {

Result<SharedFiles> open_shared_files(const Checkpoint& c, const KindSet& kinds, int floor,
                                     const std::set<uint32_t>& held) {
  std::map<uint32_t, int> holders;
  // A file an object holds (in flight in a queue) is opened here even when no
  // process or one holds it: they must all share its open file description.
  for (uint32_t id : held) holders[id] += 2;
  for (auto& p : c.processes) {
    std::set<uint32_t> mine;
    for (auto& f : p.fds) mine.insert(f.file_id());
    // What its files reference counts as held: a file only another process
    // holds is then opened once for both.
    std::vector<uint32_t> referenced;
    for (uint32_t id : mine)
      if (const img::FileEntry* e = c.file(id))
        if (auto kind = kinds.owner(*e)) (*kind)->references(*e, referenced);
    mine.insert(referenced.begin(), referenced.end());
    for (uint32_t id : mine) holders[id]++;
  }
  SharedFiles out;
  for (auto& [id, n] : holders) {
    if (n < 2) continue;
    const img::FileEntry* entry = c.file(id);
    if (!entry) return failf("file {} is not in files.img", id);
    if (auto kind = kinds.owner(*entry); kind && !(*kind)->opens_before_tree(*entry)) continue;
    ASSIGN_OR_RETURN(UniqueFd fd, with_context(kinds.open(*entry), fmt::format("file {}", id)));
    out.fds.emplace(id, move_fd_above(std::move(fd), floor));
  }
  return out;
}

Result<int> restore_fd_table(const ProcessImages& p, const Checkpoint& c, const KindSet& kinds,
                             const SharedFiles& shared, std::vector<int>& keep) {
  const std::vector<img::FdEntry>& fds = p.fds;
  int hi = 0;
  for (auto& f : fds) hi = std::max(hi, f.fd() + 1);
  // Our own fds go above the dumped ones; the soft limit may be below them.
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  auto move_up = [hi](int fd) -> Result<int> {
    int n = ::fcntl(fd, F_DUPFD_CLOEXEC, hi);
    if (n < 0) return failf_errno("cannot move fd {} above {}", fd, hi);
    ::close(fd);
    return n;
  };
  for (int& fd : keep) {
    ASSIGN_OR_RETURN(int n, move_up(fd));
    fd = n;
  }
  std::map<uint32_t, UniqueFd> opened;
  for (auto& f : fds) {
    if (opened.count(f.file_id())) continue;
    const img::FileEntry* entry = c.file(f.file_id());
    if (!entry) return failf("fd {}: file {} is not in files.img", f.fd(), f.file_id());
    if (int held = shared.get(f.file_id()); held >= 0) {
      int n = ::fcntl(held, F_DUPFD_CLOEXEC, hi);
      if (n < 0) return failf_errno("fd {}: dup of the shared file {}", f.fd(), f.file_id());
      opened[f.file_id()].reset(n);
      continue;
    }
    ASSIGN_OR_RETURN(UniqueFd fd, with_context(kinds.open(*entry), fmt::format("fd {}", f.fd())));
    ASSIGN_OR_RETURN(int n, move_up(fd.release()));
    opened[f.file_id()].reset(n);
  }
  // Everything below hi is minicriu's (its stdio...) or in the way: the
  // restored process sees exactly its dumped fds there.
  if (hi > 0 && ::close_range(0, static_cast<unsigned>(hi - 1), 0) != 0)
    return fail_errno("close_range below the dumped fds");
  std::map<uint32_t, int> installed;  // file id -> one dumped fd number holding it
  std::set<int> numbers;
  for (auto& f : fds) {
    if (::dup3(opened[f.file_id()].get(), f.fd(), f.cloexec() ? O_CLOEXEC : 0) < 0)
      return failf_errno("cannot install fd {}", f.fd());
    installed.emplace(f.file_id(), f.fd());
    numbers.insert(f.fd());
  }
  // Files that name other fds (epoll), now that all are in place under their
  // dumped numbers.
  FdLookup lookup;
  lookup.fd = [&numbers](int dumped) { return numbers.count(dumped) ? dumped : -1; };
  lookup.file = [&opened, &shared](uint32_t id) {
    auto it = opened.find(id);
    return it != opened.end() ? it->second.get() : shared.get(id);
  };
  for (auto& [id, fd] : installed) {
    const img::FileEntry* entry = c.file(id);
    ASSIGN_OR_RETURN(Kind * kind, kinds.owner(*entry));
    TRY(with_context(kind->open_after(*entry, fd, lookup), fmt::format("fd {}", fd)));
  }
  return hi;
}

Status close_fds_above(int floor, const std::vector<int>& keep) {
  ASSIGN_OR_RETURN(auto open_now, proc::list_numeric_dir("/proc/self/fd"));
  std::set<int> wanted(keep.begin(), keep.end());
  for (int fd : open_now)
    if (fd >= floor && !wanted.count(fd)) ::close(fd);
  return {};
}

}  // namespace minicriu
