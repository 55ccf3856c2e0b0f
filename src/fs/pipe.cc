#include "fs/pipe.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>

#include "kinds/kind.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

std::string pipe_link(uint64_t ino) { return fmt::format("pipe:[{}]", ino); }

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
  first_holder_[pipe_ino] = what;
  img::PipeData d;
  d.set_pipe_ino(pipe_ino);
  d.set_capacity(static_cast<uint32_t>(capacity));
  d.set_bytes(bytes);
  entries_.push_back(d);
  return {};
}

Result<std::string> PipeStore::find_external_holder(const std::set<pid_t>& tree) const {
  if (entries_.empty()) return std::string();
  std::map<std::string, uint64_t> ino_of;
  std::set<std::string> links;
  for (auto& p : entries_) {
    ino_of[pipe_link(p.pipe_ino())] = p.pipe_ino();
    links.insert(pipe_link(p.pipe_ino()));
  }
  // Ourselves included: a runtime linking us may hold the other end.
  ASSIGN_OR_RETURN(auto holder, proc::find_fd_holder(links, tree));
  if (!holder) return std::string();
  return fmt::format("{}: {} is also held by pid {} ({}) as fd {}, outside the dumped tree",
                     first_holder_.at(ino_of.at(holder->link)), holder->link, holder->pid, holder->comm,
                     holder->fd);
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

Result<PipeRestorer::Pipe*> PipeRestorer::create(uint64_t ino) {
  auto it = pipes_.find(ino);
  if (it != pipes_.end()) return &it->second;
  auto d = data_.find(ino);
  if (d == data_.end()) return failf("pipe {} has no entry in pipes.img", ino);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe2");
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
    (void)d;
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
    if (fd.link[0] != '/') {
      TRY(store_->add(fd.what, fd.local_fd, fd.st.st_ino));
      img::PipeFile* p = entry.mutable_pipe();
      p->set_pipe_ino(fd.st.st_ino);
      p->set_flags(flags);
      return {};
    }
    // A fifo: opened again by its path, which must still name it. Who else
    // may open the path outside the tree cannot be known: only the holders
    // in the tree count.
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

  // A pipe whose other end lives outside the tree would come back connected
  // to nothing: refuse it until the user brings that process into the dump.
  Status check(const DumpTree& tree, DumpEnv&) override {
    ASSIGN_OR_RETURN(std::string holder, store_->find_external_holder(tree.pids));
    if (holder.empty()) return {};
    return failf("{}; dump the tree that holds both ends, or close the pipe there before the dump", holder);
  }

  Status commit(ImageSet& images, DumpEnv&) override { return store_->commit(images); }

  bool owns(const img::FileEntry& entry) const override { return entry.has_pipe() || entry.has_fifo(); }

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_, PipeRestorer::load(env.dir));
    return {};
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
  Status resume(const RestoreEnv&) override {
    restorer_.reset();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override {
    if (f.has_fifo()) return fmt::format("fifo {} {}", f.fifo().path(), end_words(f.fifo().flags()));
    return fmt::format("pipe:[{}] {}", f.pipe().pipe_ino(), end_words(f.pipe().flags()));
  }

  void describe_images(std::string& out) const override {
    if (!restorer_) return;
    for (auto& [ino, p] : restorer_->pipes())
      out += fmt::format("pipe:[{}]: {} bytes queued, capacity {}\n", p.pipe_ino(), p.bytes(), p.capacity());
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
