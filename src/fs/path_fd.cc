// O_PATH fds: a place in the file system held without opening the file (no
// read, no write, no offset), what openat(), fstatat(AT_EMPTY_PATH) and
// fchdir() start from. Dumped as the path that names the same inode (a
// symlink itself for O_PATH|O_NOFOLLOW), opened again by that path with the
// same flags. An O_PATH fd whose file has no name left is refused.
#include <fcntl.h>
#include <sys/stat.h>

#include "fs/ghost_file.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

// What of an O_PATH description's flags open(2) keeps (build_open_flags).
constexpr uint32_t kPathFlags = O_PATH | O_NOFOLLOW | O_DIRECTORY;

const char* type_words(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFREG: return "file";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket file";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    default: return "file";
  }
}

class PathFdKind final : public Kind {
 public:
  const char* name() const override { return "O_PATH fd"; }

  bool takes(const FdDumpInfo& fd) const override { return fd.fd >= 0 && (fd.fdinfo.flags & O_PATH); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    std::string what = fmt::format("{}: O_PATH fd on {}", fd.what, fd.link);
    if (fd.link.empty() || fd.link[0] != '/')
      return failf("{}, which no path names; close it in the application before the dump", what);
    if (has_deleted_suffix(fd.link))
      return failf("{}: its {} has no name left, and an O_PATH fd cannot be reopened without one; close it "
                   "before the dump", what, type_words(fd.st.st_mode));
    // The name must still reach the same inode (the link itself for a symlink).
    struct stat by_path;
    int r = S_ISLNK(fd.st.st_mode) ? ::lstat(fd.link.c_str(), &by_path) : ::stat(fd.link.c_str(), &by_path);
    if (r != 0 || by_path.st_ino != fd.st.st_ino || by_path.st_dev != fd.st.st_dev)
      return failf("{}: the path now names another file than the one it holds", what);
    img::PathFile* p = entry.mutable_path();
    p->set_path(fd.link);
    p->set_flags(fd.fdinfo.flags & kPathFlags);
    p->set_mode(fd.st.st_mode);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_path(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::PathFile& p = entry.path();
    UniqueFd fd(::open(p.path().c_str(), static_cast<int>(p.flags() & kPathFlags) | O_PATH | O_CLOEXEC));
    if (!fd) return failf_errno("cannot open {} again (O_PATH)", p.path());
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat {}", p.path());
    if ((st.st_mode & S_IFMT) != (p.mode() & S_IFMT))
      return failf("{} is a {} now, it was a {} at the dump", p.path(), type_words(st.st_mode), type_words(p.mode()));
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    const img::PathFile& p = f.path();
    return fmt::format("O_PATH {} ({}{})", p.path(), type_words(p.mode()),
                       (p.flags() & O_NOFOLLOW) ? ", not followed" : "");
  }
};

}  // namespace

std::unique_ptr<Kind> make_path_fd_kind() { return std::make_unique<PathFdKind>(); }

}  // namespace minicriu
