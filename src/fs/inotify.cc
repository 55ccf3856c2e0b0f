// inotify: a group of watches, each (watch descriptor, inode, event mask).
// fdinfo shows every watch (fs/notify/fdinfo.c: "inotify wd:%x ino:%lx
// sdev:%x mask:%x ... f_handle:HEX") with a file handle of the watched inode,
// not its name: the dump opens the handle (open_by_handle_at, which needs
// CAP_DAC_READ_SEARCH) to learn the name the inode has now, and the restore
// adds a watch on that name again.
//
// The application knows its watches by their numbers, which the kernel hands
// out in rising order (idr_alloc_cyclic) and which come with every event; the
// restore gets each number back by adding and removing the watch until the
// kernel hands out the dumped one, then throws away the IN_IGNORED events
// those removals queued. A watch on a file or directory with no name left,
// which an fd of the tree holds open, is carried through that file's ghost
// (watched again through /proc/self/fd before the ghost is unlinked; its
// unlink at the restore queues an IN_ATTRIB, as a link count change does).
// Not restored: events queued and not read at the dump
// (fdinfo does not show them), and events that happen on the watched files
// while the restore sets the watches up. The watch follows the name the inode
// had at the dump: a file renamed or replaced between dump and restore is
// watched under that name.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

#include "fs/anon_inode.hpp"
#include "fs/file_handle.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"
#include "fs/ghost_file.hpp"

namespace minicriu {

namespace {

struct Watch {
  int wd = 0;
  uint64_t ino = 0;
  uint32_t sdev = 0, mask = 0;
  int handle_type = 0;
  std::string handle;  // raw bytes
};

Result<std::vector<Watch>> parse_watches(const FdDumpInfo& fd) {
  std::vector<Watch> out;
  std::istringstream in(fd.fdinfo.text);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("inotify wd:")) continue;
    Watch w;
    unsigned wd = 0, ignored = 0, bytes = 0;
    unsigned long ino = 0;
    char hex[2 * MAX_HANDLE_SZ + 1] = {};
    int n = std::sscanf(line.c_str(),
                        "inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x fhandle-bytes:%x "
                        "fhandle-type:%x f_handle:%256s",
                        &wd, &ino, &w.sdev, &w.mask, &ignored, &bytes, &w.handle_type, hex);
    if (n == 5)
      return failf("{} is an inotify watching inode {} on a file system without file handles "
                   "(no name can be found for it); remove that watch before the dump", fd.what, ino);
    if (n != 8 || !unhex(hex, w.handle) || w.handle.size() != bytes)
      return failf("{} ({}): cannot read the fdinfo line \"{}\"", fd.what, fd.link, line);
    w.wd = static_cast<int>(wd);
    w.ino = ino;
    out.push_back(std::move(w));
  }
  return out;
}

// The watched inode, through its file handle, and the name it has now.
struct Watched {
  std::string path;  // without " (deleted)"
  bool deleted = false;
  UniqueFd file;     // O_PATH
  struct stat st {};
};

Result<Watched> open_watched(const FdDumpInfo& fd, const Watch& w) {
  Watched out;
  ASSIGN_OR_RETURN(out.file, open_fdinfo_handle(w.sdev, w.handle_type, w.handle,
                                                fmt::format("{}: the inode {} of inotify watch {}", fd.what,
                                                            w.ino, w.wd)));
  ASSIGN_OR_RETURN(auto path, proc::read_link(fmt::format("/proc/self/fd/{}", out.file.get())));
  if (::fstat(out.file.get(), &out.st) != 0) return failf_errno("{}: fstat of inotify watch {}", fd.what, w.wd);
  out.deleted = out.st.st_nlink == 0 || has_deleted_suffix(path);
  out.path = strip_deleted_suffix(path);
  return out;
}

// Adds the watches of entry to the inotify fd in the order of their numbers.
// Deleted files are watched through the fd lookup gives of their ghost.
Status add_watches(int fd, const img::FileEntry& entry, const FdLookup* lookup) {
  for (const img::InotifyWatch& w : entry.inotify().watches()) {
    std::string path = w.path();
    if (w.file_id()) {
      int file = lookup ? lookup->file(w.file_id()) : -1;
      if (file < 0) return failf("file {}: the deleted file {} of inotify watch {} is not open", entry.id(),
                                 w.path(), w.wd());
      // The magic link reaches the inode, with no name left as well.
      path = fmt::format("/proc/self/fd/{}", file);
    }
    // Watch numbers only rise; each removal moves the next one on by one.
    for (;;) {
      int got = ::inotify_add_watch(fd, path.c_str(), w.mask());
      if (got < 0)
        return failf_errno("file {}: cannot watch {} again (inotify watch {})", entry.id(), w.path(), w.wd());
      if (got == w.wd()) break;
      if (got > w.wd())
        return failf("file {}: inotify watch {} on {} came back as watch {}; two watches of the "
                     "image name one inode?", entry.id(), w.wd(), w.path(), got);
      ::inotify_rm_watch(fd, got);
    }
  }
  // Drop the IN_IGNORED events of the removals; the application never had
  // those watches.
  char buf[4096];
  while (::read(fd, buf, sizeof(buf)) > 0) {
  }
  if (!(entry.inotify().flags() & O_NONBLOCK) && ::fcntl(fd, F_SETFL, 0) != 0)
    return failf_errno("file {}: cannot make the inotify blocking again", entry.id());
  return {};
}

bool watches_deleted(const img::FileEntry& entry) {
  for (auto& w : entry.inotify().watches())
    if (w.file_id()) return true;
  return false;
}

class InotifyKind final : public Kind {
 public:
  const char* name() const override { return "inotify"; }

  bool takes(const FdDumpInfo& fd) const override { return fd.link == "anon_inode:inotify"; }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env) override {
    ASSIGN_OR_RETURN(auto watches, parse_watches(fd));
    std::sort(watches.begin(), watches.end(), [](auto& a, auto& b) { return a.wd < b.wd; });
    img::Inotify* in = entry.mutable_inotify();
    in->set_flags(fd.fdinfo.flags);
    for (auto& w : watches) {
      ASSIGN_OR_RETURN(Watched at, open_watched(fd, w));
      img::InotifyWatch* iw = in->add_watches();
      iw->set_wd(w.wd);
      iw->set_path(at.path);
      iw->set_mask(w.mask);
      iw->set_ino(w.ino);
      if (!at.deleted) continue;
      // A watch outlives its file's last name only while the file is open
      // (fsnotify_inoderemove ends it when the dentry goes): carried as the
      // ghost file it is, if an fd of the tree holds it (check()).
      bool dir = S_ISDIR(at.st.st_mode);
      if (!dir && !S_ISREG(at.st.st_mode))
        return failf("{} is an inotify watching a deleted special file ({}, watch {}), which minicriu "
                     "cannot watch again; remove that watch before the dump", fd.what, at.path, w.wd);
      if (!env.add_file) return failf("{}: inotify watch {} on a deleted file: no file registry", fd.what, w.wd);
      UniqueFd file(::open(fmt::format("/proc/self/fd/{}", at.file.get()).c_str(),
                           O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0)));
      if (!file) return failf_errno("{}: cannot open the deleted file {} of inotify watch {}", fd.what, at.path, w.wd);
      ASSIGN_OR_RETURN(uint32_t id, env.add_file(file.get(), fmt::format("{}: the deleted file {} of inotify "
                                                                         "watch {}", fd.what, at.path, w.wd)));
      iw->set_file_id(id);
      deleted_.push_back({fd.what, at.path, w.wd, at.st.st_dev, at.st.st_ino});
    }
    return {};
  }

  Status observe_fd(const FdDumpInfo& fd, uint32_t, DumpEnv&) override {
    held_.insert({fd.st.st_dev, fd.st.st_ino});
    return {};
  }

  Status check(const DumpTree&, DumpEnv&) override {
    for (auto& d : deleted_)
      if (!held_.count({d.dev, d.ino}))
        return failf("{} is an inotify watching a deleted file ({}, watch {}) that no fd of the dumped tree "
                     "holds open (a process outside the tree, a mapping or a cwd keeps it); after a restore "
                     "nothing would, and the watch would end: remove that watch before the dump, or hold the "
                     "file open in the tree", d.what, d.path, d.wd);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_inotify(); }

  void references(const img::FileEntry& entry, std::vector<uint32_t>& file_ids) const override {
    for (auto& w : entry.inotify().watches())
      if (w.file_id()) file_ids.push_back(w.file_id());
  }

  // The ghosts of deleted watched files: opened once before the tree (no fd
  // of the tree holds these descriptions), for FdLookup::file in open_after.
  void list_held(const RestoreEnv& env, std::set<uint32_t>& file_ids) const override {
    for (auto& f : env.checkpoint.files)
      if (f.has_inotify())
        for (auto& w : f.inotify().watches())
          if (w.file_id()) file_ids.insert(w.file_id());
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    UniqueFd fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!fd) return failf_errno("file {}: cannot create an inotify", entry.id());
    // Watches of deleted files need their ghosts, open in the process once
    // its fds are in place: all are added then, in order.
    if (!watches_deleted(entry)) TRY(add_watches(fd.get(), entry, nullptr));
    return fd;
  }

  Status open_after(const img::FileEntry& entry, int fd, const FdLookup& lookup) override {
    if (!watches_deleted(entry)) return {};
    // An inotify several processes hold is one description: the first of
    // them to get here adds its watches.
    ASSIGN_OR_RETURN(auto text, proc::read_file(fmt::format("/proc/self/fdinfo/{}", fd)));
    if (text.find("inotify wd:") != std::string::npos) return {};
    return add_watches(fd, entry, &lookup);
  }

  std::string describe(const img::FileEntry& f) const override {
    std::string watches;
    for (auto& w : f.inotify().watches())
      watches += fmt::format("{}wd {} {} mask {:#x}", watches.empty() ? "" : "; ", w.wd(), w.path(), w.mask());
    return fmt::format("inotify ({} watch(es){}{})", f.inotify().watches_size(), watches.empty() ? "" : ": ",
                       watches);
  }

 private:
  struct Deleted {
    std::string what, path;
    int wd;
    dev_t dev;
    ino_t ino;
  };
  std::vector<Deleted> deleted_;
  std::set<std::pair<dev_t, ino_t>> held_;
};

}  // namespace

std::unique_ptr<Kind> make_inotify_kind() { return std::make_unique<InotifyKind>(); }

}  // namespace minicriu
