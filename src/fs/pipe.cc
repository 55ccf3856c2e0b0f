#include "fs/pipe.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <utility>

#include "base/paths.hpp"
#include "fs/ghost_file.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

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
  auto made = fifo_paths_.find(ino);
  if (fifo.deleted() && made == fifo_paths_.end())
    return failf("fifo {} (no name left at the dump) was not made again", fifo.path());
  const std::string& path = fifo.deleted() ? made->second : fifo.path();
  if (!data_.count(ino)) return failf("fifo {} has no entry in pipes.img", fifo.path());
  if (stand_ins_.count(ino)) return open_stand_in(ino, fifo.flags());
  if (data_.at(ino).external()) return failf("fifo {}: external, and nothing stands in for it", fifo.path());
  if (!fifo_anchors_.count(ino)) {
    UniqueFd anchor(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
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
  UniqueFd fd(::open(path.c_str(), flags | O_NONBLOCK | O_CLOEXEC));
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
    // A fifo with no name left: made again under a temporary name at restore.
    if (fd.st.st_nlink == 0 && has_deleted_suffix(fd.link)) {
      TRY(store_->add(fd.what, fd.local_fd, fd.st.st_ino));
      img::FifoFile* f = entry.mutable_fifo();
      f->set_path(strip_deleted_suffix(fd.link));
      f->set_pipe_ino(fd.st.st_ino);
      f->set_flags(flags);
      f->set_deleted(true);
      f->set_mode(fd.st.st_mode & 07777);
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

  // Fifos with no name left first get a temporary one, beside where they
  // were (made in the restoring program, which removes them at resume).
  Status create_shared(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!f.has_fifo() || !f.fifo().deleted() || ghost_fifos_.count(f.fifo().pipe_ino())) continue;
      const img::FifoFile& fifo = f.fifo();
      if (!is_canonical_path(fifo.path()))
        return failf("fifo {:?}: not an absolute path without . or .. components; the images are damaged",
                     fifo.path());
      std::string wanted = std::filesystem::path(fifo.path()).parent_path();
      std::string parent = ghost_parent(wanted, {}, env.options.ghost_dir);
      if (parent.empty())
        return failf("fifo {} (no name left at the dump): its directory {} is gone and no directory above it is "
                     "left; give another with --ghost-dir DIR", fifo.path(), wanted);
      std::string tmp = fmt::format("{}/.minicriu-ghost-fifo-{}-{}", parent, fifo.pipe_ino(), ::getpid());
      if (::mkfifo(tmp.c_str(), 0600) != 0)
        return failf_errno("fifo {} (no name left at the dump): cannot make it again as {}", fifo.path(), tmp);
      ghost_fifos_.emplace(fifo.pipe_ino(), tmp);
      (void)::chmod(tmp.c_str(), fifo.mode() & 07777);
      restorer_->set_fifo_path(fifo.pipe_ino(), tmp);
    }
    return restorer_->create_all(env.fd_floor);
  }

  ~PipeKind() override { unlink_ghost_fifos(); }

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
    unlink_ghost_fifos();
    return {};
  }

  void unlink_ghost_fifos() {
    for (auto& [ino, path] : ghost_fifos_) ::unlink(path.c_str());
    ghost_fifos_.clear();
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
  std::map<uint64_t, std::string> ghost_fifos_;  // fifo inode -> the name made for it
};

}  // namespace

std::unique_ptr<Kind> make_pipe_kind() { return std::make_unique<PipeKind>(); }

}  // namespace minicriu
