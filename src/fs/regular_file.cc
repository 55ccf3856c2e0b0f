// Regular files, directories and device nodes reached by a path that names
// them: reopened by path with the same flags and offset. A file whose name was
// unlinked while another name survives is reached through that other name.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "base/journal.hpp"
#include "base/paths.hpp"
#include "base/unique_fd.hpp"
#include "fs/ghost_file.hpp"
#include "fs/regular_file.hpp"
#include "images/checkpoint.hpp"

namespace minicriu {

namespace {

// The name of a link remap: .minicriu-link-DEV-INO beside the unlinked name.
constexpr std::string_view kRemapPrefix = ".minicriu-link-";

bool ends_with_deleted(const std::string& s) { return has_deleted_suffix(s); }

// A name of the open file other than its unlinked one: another entry of the
// same directory if there is one, else a new link made beside the old name
// (linkat through /proc/self/fd; nlink > 0 allows it), which the restore
// removes again; where the directory was removed too, in the nearest
// directory above it. The bool says which.
Result<std::pair<std::string, bool>> surviving_name(const FdDumpInfo& fd,
                                                    std::vector<std::string>& created) {
  std::filesystem::path old = strip_deleted_suffix(fd.link);
  std::string dir = old.parent_path();
  if (DIR* d = ::opendir(dir.c_str())) {
    std::string found;
    while (dirent* e = ::readdir(d)) {
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          st.st_ino == fd.st.st_ino && st.st_dev == fd.st.st_dev) {
        found = dir + "/" + e->d_name;
        break;
      }
    }
    ::closedir(d);
    if (!found.empty()) return std::pair{found, false};
  } else {
    dir = ghost_parent(dir, {}, "");
    if (dir.empty())
      return failf("{}: {} was unlinked and no directory above it is left; cannot reach the file again",
                   fd.what, old.string());
  }
  std::string remap = fmt::format("{}/{}{:x}-{}", dir, kRemapPrefix, fd.st.st_dev, fd.st.st_ino);
  std::string src = fmt::format("/proc/self/fd/{}", fd.local_fd);
  // A link remap outlives us: its guardian removes it if we die before the
  // checkpoint is complete.
  TRY(journal_note(fmt::format("link-remap {}", hex_bytes(remap.data(), remap.size()))));
  if (::linkat(AT_FDCWD, src.c_str(), AT_FDCWD, remap.c_str(), AT_SYMLINK_FOLLOW) == 0)
    created.push_back(remap);
  else if (errno != EEXIST)  // EEXIST: an earlier checkpoint made it, for the same file
    return failf_errno("{}: cannot link the unlinked file {} as {}{}", fd.what, old.string(), remap,
                       errno == EXDEV ? " (its directory is gone, and the one above is another file system)" : "");
  return std::pair{remap, true};
}

class RegularFileKind final : public Kind {
 public:
  const char* name() const override { return "regular file"; }

  bool takes(const FdDumpInfo& fd) const override {
    if (fd.link.empty() || fd.link[0] != '/' || fd.link.rfind("/memfd:", 0) == 0) return false;
    // An unlinked name: ours only while another name survives (nlink > 0).
    if (ends_with_deleted(fd.link) && (fd.st.st_nlink == 0 || fd.local_fd < 0)) return false;
    return S_ISREG(fd.st.st_mode) || S_ISDIR(fd.st.st_mode) || S_ISCHR(fd.st.st_mode) ||
           S_ISBLK(fd.st.st_mode);
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    std::string path = fd.link;
    bool remap = false;
    if (ends_with_deleted(fd.link)) {
      ASSIGN_OR_RETURN(std::tie(path, remap), surviving_name(fd, created_links_));
    }
    // The name must still reach the same file, or restore would open another.
    struct stat by_path;
    if (::stat(path.c_str(), &by_path) != 0 || by_path.st_ino != fd.st.st_ino ||
        by_path.st_dev != fd.st.st_dev)
      return failf("{}: {} now names another file than the open one", fd.what, path);
    img::RegFile* reg = entry.mutable_reg();
    describe_reg_file(fd, path, *reg);
    reg->set_remove_after_restore(remap);
    return {};
  }

  // The link remaps a failed dump made are not left behind.
  void finish(bool ok, DumpEnv&) override {
    if (!ok)
      for (auto& p : created_links_)
        if (::unlink(p.c_str()) == 0) (void)journal_note(fmt::format("link-remap-gone {}", hex_bytes(p.data(), p.size())));
    created_links_.clear();
  }

  bool owns(const img::FileEntry& entry) const override {
    return entry.has_reg() && entry.reg().ghost_id() == 0;
  }

  // A link remap is removed after the restore: only one this kind made, by
  // its name, beside where the dump found the file.
  Status load(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files)
      if (f.has_reg() && f.reg().remove_after_restore() &&
          (!is_canonical_path(f.reg().path()) || !path_basename(f.reg().path()).starts_with(kRemapPrefix)))
        return failf("file {}: {:?} is marked to be removed after the restore but is not a link remap "
                     "minicriu makes; the images are damaged", f.id(), f.reg().path());
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    return reopen_reg_file(entry.reg().path(), entry.reg());
  }

  // Every holder reopened its file and the tree runs: the link remaps go.
  // Not in resume(): a restore may still fail there, and a checkpoint whose
  // link remaps are gone could not be restored again.
  void after_resume(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files)
      if (f.has_reg() && f.reg().remove_after_restore()) ::unlink(f.reg().path().c_str());
  }

  std::string describe(const img::FileEntry& f) const override { return reg_file_summary(f.reg()); }

 private:
  // Names this dump made in the file system (link remaps).
  std::vector<std::string> created_links_;
};

}  // namespace

void describe_reg_file(const FdDumpInfo& fd, const std::string& path, img::RegFile& reg) {
  reg.set_path(path);
  reg.set_flags(fd.fdinfo.flags);
  reg.set_pos(fd.fdinfo.pos);
  reg.set_size(static_cast<uint64_t>(fd.st.st_size));
  reg.set_mode(fd.st.st_mode);
  reg.set_ino(fd.st.st_ino);
  reg.set_dev(fd.st.st_dev);
}

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

std::string reg_file_summary(const img::RegFile& reg) {
  return fmt::format("{} (flags {:#o}, pos {}{})", reg.path(), reg.flags(), reg.pos(),
                     reg.ghost_id()               ? fmt::format(", ghost {}", reg.ghost_id())
                     : reg.remove_after_restore() ? ", link remap"
                                                  : "");
}

std::unique_ptr<Kind> make_regular_file_kind() { return std::make_unique<RegularFileKind>(); }

}  // namespace minicriu
