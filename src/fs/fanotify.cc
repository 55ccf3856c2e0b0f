// fanotify: a group (fanotify_init's flags and event_f_flags) and its marks,
// each on an inode, a mount or a whole file system, with an event mask and an
// ignore mask. fdinfo shows all of it (fs/notify/fdinfo.c):
//
//   fanotify flags:F event-flags:E
//   fanotify ino:I sdev:D mflags:M mask:X ignored_mask:Y fhandle-bytes:N fhandle-type:T f_handle:HEX
//   fanotify mnt_id:ID mflags:M mask:X ignored_mask:Y
//   fanotify sdev:D mflags:M mask:X ignored_mask:Y
//
// Dump: an inode is named through its file handle (as inotify's watches), a
// mount by its mount point, a file system by one of its mounts. Restore:
// fanotify_init with the same flags, each mark added again by that name
// (FAN_MARK_ADD of the mask, then of the ignore mask with the flags it had).
// Not carried: events queued and not read at the dump (fdinfo does not show
// them; a permission event a process of the tree waits on comes again, the
// waiting syscall restarts), and events on the marked objects while the
// restore sets the marks up. fanotify needs CAP_SYS_ADMIN, as the restore is.
#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "fs/anon_inode.hpp"
#include "fs/file_handle.hpp"
#include "fs/ghost_file.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

// Linux 6.0 and 5.19, newer than some headers.
#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif
#ifndef FAN_MARK_EVICTABLE
#define FAN_MARK_EVICTABLE 0x00000200
#endif

const char* mark_type_name(uint32_t type) {
  switch (type) {
    case FAN_MARK_MOUNT: return "mount";
    case FAN_MARK_FILESYSTEM: return "filesystem";
    default: return "inode";
  }
}

// One "fanotify ..." line of a mark into m; false if it is no mark line.
Result<bool> parse_mark(const FdDumpInfo& fd, const std::string& line, img::FanotifyMark& m) {
  unsigned sdev = 0, mflags = 0, mask = 0, ignored = 0, bytes = 0, mnt = 0;
  int type = 0;
  unsigned long ino = 0;
  char hex[2 * MAX_HANDLE_SZ + 1] = {};
  std::string what = fmt::format("{}: fanotify mark \"{}\"", fd.what, line);
  if (std::sscanf(line.c_str(),
                  "fanotify ino:%lx sdev:%x mflags:%x mask:%x ignored_mask:%x fhandle-bytes:%x fhandle-type:%x "
                  "f_handle:%256s",
                  &ino, &sdev, &mflags, &mask, &ignored, &bytes, &type, hex) == 8) {
    std::string handle;
    if (!unhex(hex, handle) || handle.size() != bytes) return failf("{}: cannot read its file handle", what);
    ASSIGN_OR_RETURN(UniqueFd file, open_fdinfo_handle(sdev, type, handle, what));
    ASSIGN_OR_RETURN(auto path, proc::read_link(fmt::format("/proc/self/fd/{}", file.get())));
    struct stat st {};
    if (::fstat(file.get(), &st) != 0 || st.st_nlink == 0 || has_deleted_suffix(path))
      return failf("{} is a fanotify group with a mark on a deleted file ({}), which has no name to mark "
                   "again; remove that mark (FAN_MARK_REMOVE) before the dump", fd.what, strip_deleted_suffix(path));
    m.set_type(0);  // FAN_MARK_INODE
    m.set_ino(ino);
    m.set_sdev(sdev);
    m.set_path(path);
  } else if (line.starts_with("fanotify ino:")) {
    return failf("{} is a fanotify group with a mark on inode {:#x} of a file system without file handles (no "
                 "name can be found for it); remove that mark before the dump", fd.what, ino);
  } else if (std::sscanf(line.c_str(), "fanotify mnt_id:%x mflags:%x mask:%x ignored_mask:%x", &mnt, &mflags,
                         &mask, &ignored) == 4) {
    ASSIGN_OR_RETURN(auto path, mount_point_of_id(static_cast<int>(mnt), what));
    m.set_type(FAN_MARK_MOUNT);
    m.set_mnt_id(static_cast<int32_t>(mnt));
    m.set_path(path);
  } else if (std::sscanf(line.c_str(), "fanotify sdev:%x mflags:%x mask:%x ignored_mask:%x", &sdev, &mflags, &mask,
                         &ignored) == 4) {
    ASSIGN_OR_RETURN(auto path, mount_point_of_sdev(sdev, what));
    m.set_type(FAN_MARK_FILESYSTEM);
    m.set_sdev(sdev);
    m.set_path(path);
  } else {
    return false;
  }
  m.set_flags(mflags);
  m.set_mask(mask);
  m.set_ignored_mask(ignored);
  return true;
}

Status add_mark(int fd, const img::FanotifyMark& m, uint32_t file_id) {
  unsigned base = FAN_MARK_ADD | m.type() | (m.flags() & FAN_MARK_EVICTABLE);
  std::string what = fmt::format("file {}: fanotify {} mark on {}", file_id, mark_type_name(m.type()), m.path());
  if (m.mask() && ::fanotify_mark(fd, base, m.mask(), AT_FDCWD, m.path().c_str()) != 0)
    return failf_errno("{}: cannot add its mask {:#x} again", what, m.mask());
  if (m.ignored_mask()) {
    // FAN_MARK_IGNORE (Linux 6.0) is the ignore mask that obeys FAN_ONDIR
    // and FAN_EVENT_ON_CHILD; the older FAN_MARK_IGNORED_MASK does not.
    unsigned flags = base | ((m.flags() & FAN_MARK_IGNORE) ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK) |
                     (m.flags() & FAN_MARK_IGNORED_SURV_MODIFY);
    if (::fanotify_mark(fd, flags, m.ignored_mask(), AT_FDCWD, m.path().c_str()) != 0)
      return failf_errno("{}: cannot add its ignore mask {:#x} again", what, m.ignored_mask());
  }
  return {};
}

class FanotifyKind final : public Kind {
 public:
  const char* name() const override { return "fanotify"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "fanotify"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    img::Fanotify* f = entry.mutable_fanotify();
    f->set_flags(fd.fdinfo.flags);
    bool group = false;
    std::istringstream in(fd.fdinfo.text);
    for (std::string line; std::getline(in, line);) {
      unsigned flags = 0, event_flags = 0;
      if (std::sscanf(line.c_str(), "fanotify flags:%x event-flags:%x", &flags, &event_flags) == 2) {
        // FAN_CLOEXEC and FAN_NONBLOCK as given (fdinfo shows them); the
        // file's O_NONBLOCK now is in flags.
        f->set_init_flags(flags);
        f->set_event_f_flags(event_flags);
        group = true;
        continue;
      }
      img::FanotifyMark m;
      ASSIGN_OR_RETURN(bool is_mark, parse_mark(fd, line, m));
      if (is_mark) *f->add_marks() = std::move(m);
    }
    if (!group) return failf("{} ({}): its fdinfo has no \"fanotify flags:\" line", fd.what, fd.link);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_fanotify(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::Fanotify& f = entry.fanotify();
    // The flags as they were given (the group keeps them, fdinfo shows
    // them); close-on-exec and O_NONBLOCK of the file as they are now.
    unsigned flags = f.init_flags();
    UniqueFd fd(::fanotify_init(flags, f.event_f_flags()));
    if (!fd)
      return failf_errno("file {}: cannot make its fanotify group again (fanotify_init({:#x}, {:#o})){}", entry.id(),
                         flags, f.event_f_flags(), errno == EPERM ? "; it needs CAP_SYS_ADMIN" : "");
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0 || fl < 0 ||
        ::fcntl(fd.get(), F_SETFL, (fl & ~O_NONBLOCK) | static_cast<int>(f.flags() & O_NONBLOCK)) != 0)
      return failf_errno("file {}: fanotify group: fcntl", entry.id());
    for (const img::FanotifyMark& m : f.marks()) TRY(add_mark(fd.get(), m, entry.id()));
    return fd;
  }

  std::string describe(const img::FileEntry& e) const override {
    const img::Fanotify& f = e.fanotify();
    std::string marks;
    for (auto& m : f.marks())
      marks += fmt::format("{}{} {} mask {:#x}{}", marks.empty() ? "" : "; ", mark_type_name(m.type()), m.path(),
                           m.mask(), m.ignored_mask() ? fmt::format(" ignored {:#x}", m.ignored_mask()) : "");
    return fmt::format("fanotify (flags {:#x}, event flags {:#o}, {} mark(s){}{})", f.init_flags(), f.event_f_flags(),
                       f.marks_size(), marks.empty() ? "" : ": ", marks);
  }
};

}  // namespace

std::unique_ptr<Kind> make_fanotify_kind() { return std::make_unique<FanotifyKind>(); }

}  // namespace minicriu
