#include "fs/pipe.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <utility>

#include "kinds/kind.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

std::string pipe_link(uint64_t ino) { return fmt::format("pipe:[{}]", ino); }

const char* end_name(bool reads) { return reads ? "read" : "write"; }

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

int queued_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

}  // namespace

Status PipeStore::add(const std::string& what, int local_fd, uint64_t pipe_ino) {
  for (auto& p : entries_)
    if (p.pipe_ino() == pipe_ino) return {};
  // A read end of our own: tee needs one, and the target's may not be in the
  // tree at all. Opening a pipe through /proc gives a new end of it.
  UniqueFd rd(::open(fmt::format("/proc/self/fd/{}", local_fd).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!rd) return failf_errno("{}: {}: cannot open a read end of it", what, pipe_link(pipe_ino));
  int capacity = ::fcntl(rd.get(), F_GETPIPE_SZ);
  if (capacity < 0) return failf_errno("{}: {}: F_GETPIPE_SZ", what, pipe_link(pipe_ino));
  int copy[2];
  if (::pipe2(copy, O_CLOEXEC | O_NONBLOCK) != 0) return fail_errno("pipe for pipe data");
  UniqueFd copy_rd(copy[0]), copy_wr(copy[1]);
  if (::fcntl(copy_wr.get(), F_SETPIPE_SZ, capacity) < capacity)
    return failf_errno("{}: {}: its capacity of {} bytes is above what we may make (fs.pipe-max-size)",
                       what, pipe_link(pipe_ino), capacity);
  // tee duplicates what is queued without consuming it.
  ssize_t n = ::tee(rd.get(), copy_wr.get(), INT_MAX, SPLICE_F_NONBLOCK);
  if (n < 0 && errno != EAGAIN) return failf_errno("{}: {}: tee of its data", what, pipe_link(pipe_ino));
  uint64_t bytes = n > 0 ? static_cast<uint64_t>(n) : 0;
  if (bytes) {
    if (!data_) {
      ASSIGN_OR_RETURN(auto f, RawImageFile::create(pipes_data_image(dir_)));
      data_ = std::make_unique<RawImageFile>(std::move(f));
    }
    for (uint64_t left = bytes; left > 0;) {
      ssize_t s = ::splice(copy_rd.get(), nullptr, data_->fd(), nullptr, left, SPLICE_F_MOVE);
      if (s < 0 && errno == EINTR) continue;
      if (s <= 0) return failf_errno("{}: {}: writing its data to the image", what, pipe_link(pipe_ino));
      left -= static_cast<uint64_t>(s);
    }
  }
  struct stat st {};
  if (::fstat(rd.get(), &st) != 0) return failf_errno("{}: {}: fstat", what, pipe_link(pipe_ino));
  img::PipeData d;
  d.set_pipe_ino(pipe_ino);
  d.set_capacity(static_cast<uint32_t>(capacity));
  d.set_bytes(bytes);
  d.set_dev(st.st_dev);
  entries_.push_back(d);
  return {};
}

void PipeStore::add_end(uint64_t pipe_ino, pid_t pid, int fd, uint32_t flags, const std::string& what,
                        const std::string& link) {
  ends_[pipe_ino].push_back({pid, fd, flags, what, link});
}

const img::PipeData* PipeStore::entry(uint64_t pipe_ino) const {
  for (auto& p : entries_)
    if (p.pipe_ino() == pipe_ino) return &p;
  return nullptr;
}

img::PipeData* PipeStore::entry(uint64_t pipe_ino) {
  return const_cast<img::PipeData*>(std::as_const(*this).entry(pipe_ino));
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

Status PipeStore::commit(ImageSet& images) {
  if (data_) TRY(images.commit(*data_));
  data_.reset();
  return images.write(pipes_image(dir_), kPipesImage, entries_);
}

Result<std::unique_ptr<PipeRestorer>> PipeRestorer::load(const ImageDir& dir) {
  auto r = std::make_unique<PipeRestorer>();
  ASSIGN_OR_RETURN(auto entries, read_all_images<img::PipeData>(pipes_image(dir), kPipesImage));
  uint64_t offset = 0;
  for (auto& e : entries) {
    if (e.bytes() > e.capacity())
      return failf("{}: pipe {} holds {} bytes, more than its capacity {}", pipes_image(dir), e.pipe_ino(),
                   e.bytes(), e.capacity());
    r->data_offset_[e.pipe_ino()] = offset;
    offset += e.bytes();
    r->data_[e.pipe_ino()] = e;
  }
  r->data_path_ = pipes_data_image(dir);
  if (offset > 0) {
    struct stat st;
    if (::stat(r->data_path_.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != offset)
      return failf("{} does not hold the {} bytes its pipes need", r->data_path_, offset);
  }
  return r;
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

Result<PipeRestorer::Pipe*> PipeRestorer::create(uint64_t ino) {
  auto it = pipes_.find(ino);
  if (it != pipes_.end()) return &it->second;
  auto d = data_.find(ino);
  if (d == data_.end()) return failf("pipe {} has no entry in pipes.img", ino);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe2");
  if (d->second.external()) return failf("{}: external, and nothing stands in for it", pipe_link(ino));
  Pipe pipe;
  pipe.read_end = move_fd_above(UniqueFd(p[0]), fd_floor_);
  pipe.write_end = move_fd_above(UniqueFd(p[1]), fd_floor_);
  int wr = pipe.write_end.get();
  if (::fcntl(wr, F_SETPIPE_SZ, d->second.capacity()) < static_cast<int>(d->second.capacity()))
    return failf_errno("pipe {}: cannot give it its capacity of {} bytes", ino, d->second.capacity());
  TRY(write_data(ino, wr));
  return &pipes_.emplace(ino, std::move(pipe)).first->second;
}

Status PipeRestorer::create_all(int fd_floor) {
  fd_floor_ = fd_floor;
  for (auto& [ino, d] : data_) {
    if (auto in = stand_ins_.find(ino); in != stand_ins_.end()) {
      in->second.fd = move_fd_above(std::move(in->second.fd), fd_floor);
      continue;
    }
    if (d.external()) return failf("{}: external, and nothing stands in for it", pipe_link(ino));
    TRY(create(ino));
  }
  return {};
}

Status PipeRestorer::write_data(uint64_t ino, int write_end) {
  const img::PipeData& d = data_.at(ino);
  if (!d.bytes()) return {};
  UniqueFd data(::open(data_path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!data) return failf_errno("cannot open {}", data_path_);
  // The bytes fit: they were in a pipe of this capacity.
  std::vector<char> buf(d.bytes());
  if (::pread(data.get(), buf.data(), buf.size(), static_cast<off_t>(data_offset_[ino])) !=
      static_cast<ssize_t>(buf.size()))
    return failf_errno("short read of pipe {}'s data", ino);
  if (::write(write_end, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
    return failf_errno("writing pipe {}'s data back", ino);
  return {};
}

Result<UniqueFd> PipeRestorer::open_fifo(const img::FifoFile& fifo) {
  uint64_t ino = fifo.pipe_ino();
  if (!data_.count(ino)) return failf("fifo {} has no entry in pipes.img", fifo.path());
  if (stand_ins_.count(ino)) return open_stand_in(ino, fifo.flags());
  if (data_.at(ino).external()) return failf("fifo {}: external, and nothing stands in for it", fifo.path());
  if (!fifo_anchors_.count(ino)) {
    UniqueFd anchor(::open(fifo.path().c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!anchor) return failf_errno("cannot open the fifo {}", fifo.path());
    struct stat st;
    if (::fstat(anchor.get(), &st) != 0 || !S_ISFIFO(st.st_mode))
      return failf("{} is no longer a fifo", fifo.path());
    const img::PipeData& d = data_.at(ino);
    if (::fcntl(anchor.get(), F_SETPIPE_SZ, d.capacity()) < static_cast<int>(d.capacity()))
      return failf_errno("fifo {}: cannot give it its capacity of {} bytes", fifo.path(), d.capacity());
    TRY(write_data(ino, anchor.get()));
    fifo_anchors_.emplace(ino, move_fd_above(std::move(anchor), fd_floor_));
  }
  // Non-blocking to open (the anchor is both a reader and a writer), then the
  // flags it had.
  int flags = static_cast<int>(fifo.flags()) & (O_ACCMODE | O_NONBLOCK | O_DIRECT);
  UniqueFd fd(::open(fifo.path().c_str(), flags | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return failf_errno("cannot reopen the fifo {}", fifo.path());
  if (!(flags & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, flags & ~O_ACCMODE) != 0)
    return failf_errno("fifo {}: F_SETFL", fifo.path());
  return fd;
}

Result<UniqueFd> PipeRestorer::open_end(const img::PipeFile& end) {
  if (stand_ins_.count(end.pipe_ino())) return open_stand_in(end.pipe_ino(), end.flags());
  ASSIGN_OR_RETURN(Pipe * pipe, create(end.pipe_ino()));
  bool reading = (end.flags() & O_ACCMODE) == O_RDONLY;
  UniqueFd& ours = reading ? pipe->read_end : pipe->write_end;
  // Every end a description of its own, with its own flags; ours stay until
  // every holder has its end.
  int flags = static_cast<int>(end.flags()) & (O_ACCMODE | O_NONBLOCK | O_DIRECT);
  UniqueFd fd(::open(fmt::format("/proc/self/fd/{}", ours.get()).c_str(), flags | O_CLOEXEC));
  if (!fd) return failf_errno("pipe {}: cannot open its {} end", end.pipe_ino(), reading ? "read" : "write");
  return fd;
}

namespace {

std::string end_words(uint32_t flags) {
  return fmt::format("{} end{}", (flags & O_ACCMODE) == O_RDONLY ? "read" : "write",
                     (flags & O_NONBLOCK) ? ", non-blocking" : "");
}

class PipeKind final : public Kind {
 public:
  const char* name() const override { return "pipe"; }

  bool takes(const FdDumpInfo& fd) const override {
    if (!S_ISFIFO(fd.st.st_mode)) return false;
    return fd.link.rfind("pipe:", 0) == 0 || (!fd.link.empty() && fd.link[0] == '/');
  }

  Status begin(DumpEnv& env) override {
    store_.emplace(env.dir);
    return {};
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    uint32_t flags = fd.fdinfo.flags & (O_ACCMODE | O_NONBLOCK | O_DIRECT);
    store_->add_end(fd.st.st_ino, fd.pid, fd.fd, flags, fd.what, fd.link);
    if (fd.link[0] != '/') {
      TRY(store_->add(fd.what, fd.local_fd, fd.st.st_ino));
      img::PipeFile* p = entry.mutable_pipe();
      p->set_pipe_ino(fd.st.st_ino);
      p->set_flags(flags);
      return {};
    }
    // A fifo: opened again by its path, which must still name it. Who may
    // open the path later cannot be known: only those holding it now count
    // (check()).
    struct stat by_path;
    if (::stat(fd.link.c_str(), &by_path) != 0 || by_path.st_ino != fd.st.st_ino ||
        by_path.st_dev != fd.st.st_dev)
      return failf("{}: the fifo {} was removed or replaced since it was opened", fd.what, fd.link);
    TRY(store_->add(fd.what, fd.local_fd, fd.st.st_ino));
    img::FifoFile* f = entry.mutable_fifo();
    f->set_path(fd.link);
    f->set_pipe_ino(fd.st.st_ino);
    f->set_flags(flags);
    return {};
  }

  // A pipe also held outside the tree would come back connected to nothing:
  // refused unless accepted as external, to be given a stand-in at restore.
  Status check(const DumpTree& tree, DumpEnv& env) override {
    TRY(store_->check_outside(tree.pids, env.external));
    // A tree left running reads its pipes again at once: nothing to watch.
    if (!env.options.leave_running) TRY(store_->watch_external());
    return {};
  }

  Status commit(ImageSet& images, DumpEnv&) override {
    TRY(store_->check_watched());
    return store_->commit(images);
  }

  void release(TreeFate fate, DumpEnv& env) override {
    if (!store_) return;
    if (fate == TreeFate::dies) store_->warn_late_bytes(env.log);
    else store_->drop_watches();
  }

  void finish(bool, DumpEnv&) override {
    if (store_) store_->drop_watches();
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_pipe() || entry.has_fifo(); }

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_, PipeRestorer::load(env.dir));
    return {};
  }

  void list_external(const RestoreEnv&, std::set<std::string>& keys) const override {
    if (restorer_) keys.merge(restorer_->external_keys());
  }

  // Asked for before anything is made, so a missing stand-in costs nothing.
  Status take_stand_ins(const ExternalStandIns& stand_ins, const RestoreEnv&) override {
    return restorer_->take_stand_ins(stand_ins);
  }

  Status create_shared(const RestoreEnv& env) override {
    return restorer_->create_all(env.fd_floor);
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    if (!restorer_) return fail("pipes were not loaded for this restore");
    if (entry.has_fifo()) return restorer_->open_fifo(entry.fifo());
    return restorer_->open_end(entry.pipe());
  }

  // Every holder has its ends: ours go, so that a reader sees the end of the
  // stream when the last writer of the tree closes.
  // The bytes an external pipe held go into its stand-in last, once the
  // restore can no longer fail for want of anything else.
  Status resume(const RestoreEnv&) override {
    TRY(restorer_->fill_stand_ins());
    restorer_.reset();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override {
    uint64_t ino = f.has_fifo() ? f.fifo().pipe_ino() : f.pipe().pipe_ino();
    std::string end = f.has_fifo() ? fmt::format("fifo {} {}", f.fifo().path(), end_words(f.fifo().flags()))
                                   : fmt::format("pipe:[{}] {}", ino, end_words(f.pipe().flags()));
    return end + external_words(ino);
  }

  void describe_images(std::string& out) const override {
    if (!restorer_) return;
    for (auto& [ino, p] : restorer_->pipes())
      out += fmt::format("pipe:[{}]: {} bytes queued, capacity {}{}\n", p.pipe_ino(), p.bytes(), p.capacity(),
                         external_words(ino));
  }

  // ", external: ..." for a pipe held outside the tree too, else "".
  std::string external_words(uint64_t ino) const {
    if (!restorer_) return "";
    auto it = restorer_->pipes().find(ino);
    if (it == restorer_->pipes().end() || !it->second.external()) return "";
    const img::PipeData& p = it->second;
    return fmt::format(", external (pid {} ({}) outside the tree held it too; the tree {} it): restore "
                       "with --inherit-fd fd[N]:pipe:[{}], N the {} end of a pipe", p.outside_pid(),
                       p.outside_comm(), p.tree_reads() ? "read from" : "wrote to", ino,
                       end_name(p.tree_reads()));
  }

  void add_to_view(img::CheckpointView& view) const override {
    if (!restorer_) return;
    for (auto& [ino, p] : restorer_->pipes()) *view.add_pipes() = p;
  }

 private:
  std::optional<PipeStore> store_;
  std::unique_ptr<PipeRestorer> restorer_;
};

}  // namespace

std::unique_ptr<Kind> make_pipe_kind() { return std::make_unique<PipeKind>(); }

}  // namespace minicriu
