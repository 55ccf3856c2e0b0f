// Named pipes: an end is opened again by its path; the bytes queued in the
// fifo are carried like a pipe's (PipeStore, by inode). Who else may open the
// path outside the tree cannot be known: only the holders in the tree count.
#include <fcntl.h>
#include <sys/stat.h>

#include "fs/file_kind.hpp"
#include "fs/pipe.hpp"

namespace minicriu {

namespace {

class FifoKind final : public FileKind {
 public:
  const char* name() const override { return "fifo"; }
  bool matches(const FdDumpInfo& fd) const override {
    return S_ISFIFO(fd.st.st_mode) && !fd.link.empty() && fd.link[0] == '/';
  }
  Status dump(const FdDumpInfo& fd, img::FileEntry& entry, FileDumpContext& ctx) const override {
    struct stat by_path;
    if (::stat(fd.link.c_str(), &by_path) != 0 || by_path.st_ino != fd.st.st_ino ||
        by_path.st_dev != fd.st.st_dev)
      return failf("{}: the fifo {} was removed or replaced since it was opened", fd.what, fd.link);
    TRY(ctx.pipes.add(fd.what, fd.local_fd, fd.st.st_ino));
    img::FifoFile* f = entry.mutable_fifo();
    f->set_path(fd.link);
    f->set_pipe_ino(fd.st.st_ino);
    f->set_flags(fd.fdinfo.flags & (O_ACCMODE | O_NONBLOCK | O_DIRECT));
    return {};
  }
  bool restores(const img::FileEntry& entry) const override { return entry.has_fifo(); }
  Result<UniqueFd> open(const img::FileEntry& entry, const FileRestoreContext& ctx) const override {
    if (!ctx.pipes) return fail("pipes were not loaded for this restore");
    return ctx.pipes->open_fifo(entry.fifo());
  }
};

}  // namespace

const FileKind& fifo_kind() {
  static const FifoKind kind;
  return kind;
}

}  // namespace minicriu
