// Regular files, directories and device nodes that are reached by a path that
// still names them: reopened by path with the same flags and offset.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/file_kind.hpp"

namespace minicriu {

namespace {

bool ends_with_deleted(const std::string& s) {
  static const std::string kDeleted = " (deleted)";
  return s.size() >= kDeleted.size() &&
         s.compare(s.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0;
}

class RegularFileKind final : public FileKind {
 public:
  const char* name() const override { return "regular file"; }

  bool matches(const FdDumpInfo& fd) const override {
    if (fd.link.empty() || fd.link[0] != '/' || ends_with_deleted(fd.link)) return false;
    if (fd.link.rfind("/memfd:", 0) == 0) return false;
    return S_ISREG(fd.st.st_mode) || S_ISDIR(fd.st.st_mode) || S_ISCHR(fd.st.st_mode) ||
           S_ISBLK(fd.st.st_mode);
  }

  Status dump(const FdDumpInfo& fd, img::FileEntry& entry, FileDumpContext&) const override {
    // The name must still reach the same file, or restore would open another.
    struct stat by_path;
    if (::stat(fd.link.c_str(), &by_path) != 0 || by_path.st_ino != fd.st.st_ino ||
        by_path.st_dev != fd.st.st_dev)
      return failf("{}: {} now names another file than the open one", fd.what, fd.link);
    img::RegFile* reg = entry.mutable_reg();
    reg->set_path(fd.link);
    reg->set_flags(fd.fdinfo.flags);
    reg->set_pos(fd.fdinfo.pos);
    reg->set_size(static_cast<uint64_t>(fd.st.st_size));
    reg->set_mode(fd.st.st_mode);
    reg->set_ino(fd.st.st_ino);
    reg->set_dev(fd.st.st_dev);
    return {};
  }

  bool restores(const img::FileEntry& entry) const override {
    return entry.has_reg() && entry.reg().ghost_id() == 0;
  }

  Result<UniqueFd> open(const img::FileEntry& entry, const FileRestoreContext&) const override {
    return reopen_reg_file(entry.reg().path(), entry.reg());
  }
};

}  // namespace

Result<UniqueFd> reopen_reg_file(const std::string& path, const img::RegFile& reg) {
  // Creation flags did their work when the file was first opened.
  int flags = static_cast<int>(reg.flags()) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
  UniqueFd fd(::open(path.c_str(), flags | O_NOCTTY));
  if (!fd) return failf_errno("cannot reopen {}", reg.path());
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat {}", reg.path());
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < reg.size())
    return failf("{} shrank since the dump ({} bytes, was {})", reg.path(), st.st_size, reg.size());
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    if (::lseek(fd.get(), static_cast<off_t>(reg.pos()), SEEK_SET) < 0)
      return failf_errno("cannot seek {} to {}", reg.path(), reg.pos());
  }
  return fd;
}

const FileKind& regular_file_kind() {
  static const RegularFileKind kind;
  return kind;
}

}  // namespace minicriu
