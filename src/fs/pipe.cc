#include "fs/pipe.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>

#include "fs/file_kind.hpp"
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
      ASSIGN_OR_RETURN(auto f, RawImageFile::create(dir_.pipes_data()));
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

Status PipeStore::commit() {
  if (data_) TRY(data_->commit());
  data_.reset();
  return {};
}

Result<std::unique_ptr<PipeRestorer>> PipeRestorer::load(const ImageDir& dir) {
  auto r = std::make_unique<PipeRestorer>();
  ASSIGN_OR_RETURN(auto entries, read_all_images<img::PipeData>(dir.pipes(), ImageKind::pipes));
  uint64_t offset = 0;
  for (auto& e : entries) {
    if (e.bytes() > e.capacity())
      return failf("{}: pipe {} holds {} bytes, more than its capacity {}", dir.pipes(), e.pipe_ino(),
                   e.bytes(), e.capacity());
    r->data_offset_[e.pipe_ino()] = offset;
    offset += e.bytes();
    r->data_[e.pipe_ino()] = e;
  }
  r->data_path_ = dir.pipes_data();
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

Status PipeRestorer::create_all() {
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

class PipeKind final : public FileKind {
 public:
  const char* name() const override { return "pipe"; }
  bool matches(const FdDumpInfo& fd) const override {
    return S_ISFIFO(fd.st.st_mode) && fd.link.rfind("pipe:", 0) == 0;
  }
  Status dump(const FdDumpInfo& fd, img::FileEntry& entry, FileDumpContext& ctx) const override {
    TRY(ctx.pipes.add(fd.what, fd.local_fd, fd.st.st_ino));
    img::PipeFile* p = entry.mutable_pipe();
    p->set_pipe_ino(fd.st.st_ino);
    p->set_flags(fd.fdinfo.flags & (O_ACCMODE | O_NONBLOCK | O_DIRECT));
    return {};
  }
  bool restores(const img::FileEntry& entry) const override { return entry.has_pipe(); }
  Result<UniqueFd> open(const img::FileEntry& entry, const FileRestoreContext& ctx) const override {
    if (!ctx.pipes) return fail("pipes were not loaded for this restore");
    return ctx.pipes->open_end(entry.pipe());
  }
};

}  // namespace

const FileKind& pipe_kind() {
  static const PipeKind kind;
  return kind;
}

}  // namespace minicriu
