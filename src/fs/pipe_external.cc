// Pipes and fifos held outside the tree too (a rank's stdio, whose other
// ends its runtime holds), the external part of the pipe kind (pipe.cc):
// found at dump by a scan of the fds of every process not dumped, refused
// unless accepted (ExternalPolicy), the queue of one the tree reads from
// carried and watched until the kill; at restore what the caller gives
// stands in for each (ExternalStandIns), checked before anything is made,
// each end of the tree opened again on it and the carried bytes written in
// before the tree runs.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/pipe.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

// What an external pipe of the images is, for the restore hook and messages.
ExternalObject pipe_external_object(const img::PipeData& d) {
  ExternalObject obj;
  obj.kind = "pipe";
  obj.key = pipe_link(d.pipe_ino());
  obj.inode = d.pipe_ino();
  obj.type = end_name(d.tree_reads());
  obj.peer_pid = static_cast<pid_t>(d.outside_pid());
  obj.description = fmt::format("{} (the {} end the tree held; pid {} ({}) outside the tree held it too "
                                "at the dump)", obj.key, obj.type, d.outside_pid(), d.outside_comm());
  return obj;
}

// The first process not in `tree` that holds each link (pipe:[N], or a
// fifo's path), by pipe inode. A path may name another file for another
// process (a mount of its own): a fifo counts only where its inode matches.
Result<std::map<uint64_t, proc::FdHolder>> holders_outside(const std::map<std::string, uint64_t>& ino_of,
                                                           const std::map<uint64_t, dev_t>& dev_of,
                                                           const std::set<pid_t>& tree) {
  std::map<uint64_t, proc::FdHolder> found;
  ASSIGN_OR_RETURN(auto pids, proc::list_numeric_dir("/proc"));
  for (pid_t pid : pids) {
    if (tree.count(pid)) continue;
    std::set<std::string> left;
    for (auto& [link, ino] : ino_of)
      if (!found.count(ino)) left.insert(link);
    if (left.empty()) break;
    // find_fd_link gives the first match: ask again without it.
    while (auto holder = proc::find_fd_link(pid, left)) {
      left.erase(holder->link);
      uint64_t ino = ino_of.at(holder->link);
      if (holder->link[0] == '/') {
        struct stat st {};
        if (::stat(proc::pid_path(pid, fmt::format("fd/{}", holder->fd)).c_str(), &st) != 0 ||
            st.st_ino != ino || st.st_dev != dev_of.at(ino))
          continue;
      }
      found.emplace(ino, std::move(*holder));
    }
  }
  return found;
}

}  // namespace

int queued_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}


Status PipeStore::check_outside(const std::set<pid_t>& tree, const ExternalPolicy& policy) {
  std::map<std::string, uint64_t> ino_of;
  std::map<uint64_t, dev_t> dev_of;
  for (auto& [ino, ends] : ends_)
    for (auto& e : ends) ino_of.emplace(e.link, ino);
  for (auto& p : entries_) dev_of[p.pipe_ino()] = static_cast<dev_t>(p.dev());
  if (ino_of.empty()) return {};
  ASSIGN_OR_RETURN(auto outside, holders_outside(ino_of, dev_of, tree));
  for (auto& [ino, holder] : outside) {
    img::PipeData* p = entry(ino);
    if (!p) return failf("{}: held by the tree but never recorded", pipe_link(ino));
    TRY(check_one(*p, holder, policy));
  }
  return {};
}

Status PipeStore::check_one(img::PipeData& pipe, const proc::FdHolder& outside, const ExternalPolicy& policy) {
  const std::vector<End>& ends = ends_.at(pipe.pipe_ino());
  bool reads = false, writes = false;
  for (auto& e : ends) {
    reads |= (e.flags & O_ACCMODE) != O_WRONLY;
    writes |= (e.flags & O_ACCMODE) != O_RDONLY;
  }
  const End& first = ends.front();
  std::string held = fmt::format("{}: {} is also held by pid {} ({}) as fd {}, outside the dumped tree",
                                 first.what, first.link, outside.pid, outside.comm, outside.fd);
  // What stands in at restore is one end of another pipe: it cannot be both.
  if (reads && writes)
    return failf("{}; the tree holds both its read and its write end, and one fd cannot stand in for "
                 "both at restore: dump pid {} with the tree, or close one of the ends in the tree "
                 "before the dump", held, outside.pid);
  ExternalObject obj;
  obj.kind = "pipe";
  obj.key = pipe_link(pipe.pipe_ino());
  obj.inode = pipe.pipe_ino();
  obj.type = end_name(reads);
  obj.pid = first.pid;
  obj.fd = first.fd;
  obj.peer_pid = outside.pid;
  obj.description = fmt::format("{}: {} ({} end), also held by pid {} ({}) outside the tree", first.what,
                                first.link, obj.type, outside.pid, outside.comm);
  if (!policy.accepts(obj))
    return failf("{}; dump the tree that holds both ends, or pass --external pipe[{}] (or --ext-pipes "
                 "for every such pipe) and restore with --inherit-fd fd[N]:{}", held, pipe.pipe_ino(),
                 obj.key);
  // The tree wrote them and they wait for the reader outside: taking them
  // into the checkpoint would take them from that reader.
  if (writes && pipe.bytes() > 0)
    return failf("{}: {} byte(s) the tree wrote into {} are queued for a reader outside the tree (pid {} "
                 "({}) holds it), and cannot be carried without stealing them from that reader; dump "
                 "once it has drained the pipe", first.what, pipe.bytes(), first.link, outside.pid,
                 outside.comm);
  pipe.set_external(true);
  pipe.set_tree_reads(reads);
  pipe.set_outside_pid(static_cast<uint32_t>(outside.pid));
  pipe.set_outside_comm(outside.comm);
  return {};
}

Status PipeStore::watch_external() {
  for (auto& p : entries_) {
    if (!p.external() || !p.tree_reads()) continue;
    const End& e = ends_.at(p.pipe_ino()).front();
    // A new read end of the pipe, through the holder's fd (the tree is
    // frozen; the process outside may still write).
    UniqueFd fd(::open(proc::pid_path(e.pid, fmt::format("fd/{}", e.fd)).c_str(),
                       O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return failf_errno("{}: cannot open a read end of {} to watch it", e.what, e.link);
    watches_.emplace(p.pipe_ino(), std::move(fd));
  }
  return {};
}

Status PipeStore::check_watched() const {
  for (auto& [ino, fd] : watches_) {
    const img::PipeData& p = *entry(ino);
    int now = queued_bytes(fd.get());
    if (now >= 0 && static_cast<uint64_t>(now) == p.bytes()) continue;
    const End& e = ends_.at(ino).front();
    return failf("{}: {} held {} byte(s) when the dump read its queue and {} now: pid {} ({}) outside the "
                 "tree used it during the dump, and the checkpoint would not match; dump again while "
                 "the process outside leaves the pipe alone", e.what, e.link, p.bytes(), now,
                 p.outside_pid(), p.outside_comm());
  }
  return {};
}

void PipeStore::warn_late_bytes(const Logger& log) {
  for (auto& [ino, fd] : watches_) {
    const img::PipeData& p = *entry(ino);
    int now = queued_bytes(fd.get());
    if (now >= 0 && static_cast<uint64_t>(now) > p.bytes())
      log.warn("{}: {} byte(s) that pid {} ({}) wrote into it in the last moments of the dump are not in "
               "the checkpoint: the restored tree will not read them", ends_.at(ino).front().link,
               static_cast<uint64_t>(now) - p.bytes(), p.outside_pid(), p.outside_comm());
  }
  watches_.clear();
}

std::set<std::string> PipeRestorer::external_keys() const {
  std::set<std::string> keys;
  for (auto& [ino, d] : data_)
    if (d.external()) keys.insert(pipe_link(ino));
  return keys;
}

Status PipeRestorer::take_stand_ins(const ExternalStandIns& stand_ins) {
  for (auto& [ino, d] : data_) {
    if (!d.external()) continue;
    ExternalObject obj = pipe_external_object(d);
    ASSIGN_OR_RETURN(UniqueFd fd, stand_ins.take(obj, 0));
    if (!fd)
      return failf("{}: nothing stands in for it; restore with --inherit-fd fd[N]:{} where N is an fd "
                   "of minicriu on the {} end of a pipe to use in its place (or give one through the "
                   "restore hook)", obj.description, obj.key, obj.type);
    struct stat st {};
    int access = ::fcntl(fd.get(), F_GETFL) & O_ACCMODE;
    if (::fstat(fd.get(), &st) != 0 || !S_ISFIFO(st.st_mode))
      return failf("{}: what stands in for it is not a pipe or fifo", obj.description);
    if (d.tree_reads() ? access == O_WRONLY : access == O_RDONLY)
      return failf("{}: what stands in for it is a {} end; give the {} end of a pipe", obj.description,
                   end_name(!d.tree_reads()), obj.type);
    // The tree's pipe had this room; its writes (or the bytes written back)
    // may need all of it. A larger one is left as the caller made it.
    int capacity = ::fcntl(fd.get(), F_GETPIPE_SZ);
    if (capacity < static_cast<int>(d.capacity()) &&
        ::fcntl(fd.get(), F_SETPIPE_SZ, d.capacity()) < static_cast<int>(d.capacity()))
      return failf_errno("{}: cannot give the pipe standing in for it the capacity of {} bytes it had",
                         obj.description, d.capacity());
    StandIn in{std::move(fd), false};
    if (d.bytes() > 0) {
      int queued = queued_bytes(in.fd.get());
      // The very pipe of the dump, kept open outside all along, still holds
      // the bytes the tree did not read (and whatever came after them).
      bool same_pipe = st.st_ino == ino && st.st_dev == static_cast<dev_t>(d.dev());
      if (!(same_pipe && queued >= static_cast<int>(d.bytes()))) {
        if (queued != 0)
          return failf("{}: the pipe standing in for it already holds {} byte(s), and the {} byte(s) the "
                       "tree had not read at the dump must come first; write into it only once the "
                       "restore returned", obj.description, queued, d.bytes());
        in.fill = true;
      }
    }
    stand_ins_.emplace(ino, std::move(in));
    // A write end whose pipe has no reader cannot be opened again: said now,
    // before anything is made.
    if (!d.tree_reads()) TRY(open_stand_in(ino, O_WRONLY));
  }
  return {};
}

Result<UniqueFd> PipeRestorer::open_stand_in(uint64_t ino, uint32_t flags) const {
  const StandIn& in = stand_ins_.at(ino);
  int keep = static_cast<int>(flags) & (O_ACCMODE | O_NONBLOCK | O_DIRECT);
  // Through /proc the pipe opens again (fifo_open): a new open file
  // description of the stand-in's pipe, with the flags the tree's end had,
  // and the caller's own description untouched. O_NONBLOCK to open, so a
  // write end of a pipe without reader fails (ENXIO) instead of waiting.
  UniqueFd fd(::open(fmt::format("/proc/self/fd/{}", in.fd.get()).c_str(), keep | O_NONBLOCK | O_CLOEXEC));
  if (!fd && errno == ENXIO)
    return failf("{}: the pipe standing in for it has no reader, and the tree writes to it; give the "
                 "write end of a pipe whose read end is held", pipe_link(ino));
  if (!fd) return failf_errno("{}: cannot open a new end of the pipe standing in for it", pipe_link(ino));
  if (!(keep & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, keep & ~O_ACCMODE) != 0)
    return failf_errno("{}: F_SETFL", pipe_link(ino));
  return fd;
}

Status PipeRestorer::fill_stand_ins() {
  for (auto& [ino, in] : stand_ins_) {
    if (!in.fill) continue;
    UniqueFd wr(::open(fmt::format("/proc/self/fd/{}", in.fd.get()).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!wr) return failf_errno("{}: cannot open a write end of the pipe standing in for it", pipe_link(ino));
    TRY(write_data(ino, wr.get()));
    in.fill = false;
  }
  return {};
}

}  // namespace minicriu
