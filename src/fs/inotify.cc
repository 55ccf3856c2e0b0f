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
// those removals queued. Not restored: events queued and not read at the dump
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
#include <sstream>

#include "fs/anon_inode.hpp"
#include "kinds/kind.hpp"
#include "fs/ghost_file.hpp"

namespace minicriu {

namespace {

// Each number is a pair of hex digits in fdinfo.
bool unhex(const std::string& hex, std::string& out) {
  if (hex.size() % 2) return false;
  out.clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned v;
    if (std::sscanf(hex.c_str() + i, "%2x", &v) != 1) return false;
    out.push_back(static_cast<char>(v));
  }
  return true;
}

// A mount of the file system whose kernel dev_t is sdev (major << 20 | minor),
// from our /proc/self/mountinfo, preferring one that shows the whole file
// system (root "/"), so that every inode of it has a name under it. Ours, not
// the target's: the names are taken in our mount namespace, which is the
// target's as long as minicriu does not handle mount namespaces.
Result<UniqueFd> open_mount_of(uint32_t sdev, const std::string& what) {
  ASSIGN_OR_RETURN(auto text, proc::read_file("/proc/self/mountinfo"));
  std::string want = fmt::format("{}:{}", sdev >> 20, sdev & 0xfffff);
  std::string best;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point;
    fields >> id >> parent >> devno >> root >> point;
    if (devno != want) continue;
    if (best.empty() || root == "/") best = point;
    if (root == "/") break;
  }
  if (best.empty()) return failf("{}: an inotify watch is on device {}, which no mount here shows", what, want);
  // mountinfo escapes blanks and backslashes as \ooo.
  std::string path;
  for (size_t i = 0; i < best.size(); i++) {
    if (best[i] == '\\' && i + 3 < best.size()) {
      path.push_back(static_cast<char>(std::stoi(best.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      path.push_back(best[i]);
    }
  }
  // Not O_PATH: open_by_handle_at wants a real open file as its mount fd.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return failf_errno("{}: cannot open the mount {} of an inotify watch", what, path);
  return fd;
}

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

// The name the watched inode has now, through its file handle.
Result<std::string> watched_path(const FdDumpInfo& fd, const Watch& w) {
  ASSIGN_OR_RETURN(UniqueFd mount, open_mount_of(w.sdev, fd.what));
  std::string buf(sizeof(file_handle) + w.handle.size(), '\0');
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(w.handle.size());
  fh->handle_type = w.handle_type;
  std::copy(w.handle.begin(), w.handle.end(), reinterpret_cast<char*>(fh->f_handle));
  UniqueFd file(::open_by_handle_at(mount.get(), fh, O_PATH | O_CLOEXEC));
  if (!file)
    return failf_errno("{}: cannot open the inode {} of inotify watch {}{}", fd.what, w.ino, w.wd,
                       errno == EPERM ? " (open_by_handle_at needs CAP_DAC_READ_SEARCH)" : "");
  ASSIGN_OR_RETURN(auto path, proc::read_link(fmt::format("/proc/self/fd/{}", file.get())));
  struct stat st;
  if (::fstat(file.get(), &st) != 0 || st.st_nlink == 0 || has_deleted_suffix(path))
    return failf("{} is an inotify watching a deleted file ({}, watch {}), which has no name to "
                 "watch again; remove that watch before the dump", fd.what, strip_deleted_suffix(path), w.wd);
  return path;
}

class InotifyKind final : public Kind {
 public:
  const char* name() const override { return "inotify"; }

  bool takes(const FdDumpInfo& fd) const override { return fd.link == "anon_inode:inotify"; }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    ASSIGN_OR_RETURN(auto watches, parse_watches(fd));
    std::sort(watches.begin(), watches.end(), [](auto& a, auto& b) { return a.wd < b.wd; });
    img::Inotify* in = entry.mutable_inotify();
    in->set_flags(fd.fdinfo.flags);
    for (auto& w : watches) {
      ASSIGN_OR_RETURN(auto path, watched_path(fd, w));
      img::InotifyWatch* iw = in->add_watches();
      iw->set_wd(w.wd);
      iw->set_path(path);
      iw->set_mask(w.mask);
      iw->set_ino(w.ino);
    }
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_inotify(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    UniqueFd fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!fd) return failf_errno("file {}: cannot create an inotify", entry.id());
    for (const img::InotifyWatch& w : entry.inotify().watches()) {
      // Watch numbers only rise; each removal moves the next one on by one.
      for (;;) {
        int got = ::inotify_add_watch(fd.get(), w.path().c_str(), w.mask());
        if (got < 0)
          return failf_errno("file {}: cannot watch {} again (inotify watch {})", entry.id(), w.path(), w.wd());
        if (got == w.wd()) break;
        if (got > w.wd())
          return failf("file {}: inotify watch {} on {} came back as watch {}; two watches of the "
                       "image name one inode?", entry.id(), w.wd(), w.path(), got);
        ::inotify_rm_watch(fd.get(), got);
      }
    }
    // Drop the IN_IGNORED events of the removals; the application never had
    // those watches.
    char buf[4096];
    while (::read(fd.get(), buf, sizeof(buf)) > 0) {
    }
    if (!(entry.inotify().flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, 0) != 0)
      return failf_errno("file {}: cannot make the inotify blocking again", entry.id());
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    std::string watches;
    for (auto& w : f.inotify().watches())
      watches += fmt::format("{}wd {} {} mask {:#x}", watches.empty() ? "" : "; ", w.wd(), w.path(), w.mask());
    return fmt::format("inotify ({} watch(es){}{})", f.inotify().watches_size(), watches.empty() ? "" : ": ",
                       watches);
  }
};

}  // namespace

std::unique_ptr<Kind> make_inotify_kind() { return std::make_unique<InotifyKind>(); }

}  // namespace minicriu
