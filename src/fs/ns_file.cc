// Namespace files (nsfs): an fd on /proc/PID/ns/TYPE, or one that
// ioctl(NS_GET_USERNS, NS_GET_PARENT...) returned; its link reads
// "TYPE:[INODE]". minicriu restores no namespace: the restored tree runs in
// the restoring program's namespaces (the dumper warns where a process had
// one of its own). So an fd on a namespace that a process of the tree (or
// the dumper itself) is in comes back as the namespace file of the restored
// process, which is in the same namespace as the rest of the tree: opened
// again as /proc/self/ns/TYPE by the task being restored. An fd on any other
// namespace would come back on another one: refused.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <regex>

#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

constexpr long kNsfsMagic = 0x6e736673;  // NSFS_MAGIC, linux/magic.h

// The names /proc/PID/ns holds for a link's "TYPE:" (pid and time have a
// second one, for the children).
std::vector<std::string> ns_names(const std::string& type) {
  if (type == "pid" || type == "time") return {type, type + "_for_children"};
  return {type};
}

// The type of a link "net:[4026531840]", or "".
std::string ns_type(const std::string& link) {
  static const std::regex re("^([a-z_]+):\\[([0-9]+)\\]$");
  std::smatch m;
  return std::regex_match(link, m, re) ? m[1].str() : "";
}

bool same_inode(const std::string& path, const struct stat& st) {
  struct stat by_path;
  return ::stat(path.c_str(), &by_path) == 0 && by_path.st_ino == st.st_ino && by_path.st_dev == st.st_dev;
}

class NsFileKind final : public Kind {
 public:
  const char* name() const override { return "namespace file"; }

  bool takes(const FdDumpInfo& fd) const override {
    if (fd.local_fd < 0 || ns_type(fd.link).empty()) return false;
    struct statfs fs;
    return ::fstatfs(fd.local_fd, &fs) == 0 && fs.f_type == kNsfsMagic;
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env) override {
    std::string type = ns_type(fd.link);
    img::NsFile* ns = entry.mutable_ns();
    ns->set_flags(fd.fdinfo.flags);
    ns->set_ino(fd.st.st_ino);
    for (const std::string& n : ns_names(type)) {
      for (pid_t tid : env.tree_tids)
        if (same_inode(proc::pid_path(tid, "ns/" + n), fd.st)) {
          ns->set_type(n);
          ns->set_pid(static_cast<uint32_t>(tid));
          return {};
        }
      if (same_inode("/proc/self/ns/" + n, fd.st)) {
        ns->set_type(n);
        return {};
      }
    }
    return failf("{} ({}) is a namespace file of a {} namespace that no process of the tree (nor minicriu) "
                 "is in; minicriu restores no namespace, so it would come back on another one: close it "
                 "before the dump, or dump a tree that runs in that namespace", fd.what, fd.link, type);
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_ns(); }

  Status load(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!f.has_ns()) continue;
      bool known = false;
      for (const char* t : {"net", "uts", "ipc", "pid", "pid_for_children", "user", "mnt", "cgroup", "time",
                            "time_for_children"})
        known |= f.ns().type() == t;
      if (!known)
        return failf("file {}: {:?} is no namespace type minicriu knows; the images are damaged", f.id(),
                     f.ns().type());
    }
    return {};
  }

  // The task being restored is in the tree's namespace now (none is restored).
  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::NsFile& ns = entry.ns();
    std::string path = "/proc/self/ns/" + ns.type();
    UniqueFd fd(::open(path.c_str(), (static_cast<int>(ns.flags()) & (O_ACCMODE | O_PATH)) | O_CLOEXEC));
    if (!fd) return failf_errno("file {}: cannot open {}", entry.id(), path);
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    const img::NsFile& ns = f.ns();
    return fmt::format("namespace file {} ({}, inode {} at the dump)", ns.type(),
                       ns.pid() ? fmt::format("the namespace of pid {}", ns.pid()) : std::string("minicriu's"),
                       ns.ino());
  }
};

}  // namespace

std::unique_ptr<Kind> make_ns_file_kind() { return std::make_unique<NsFileKind>(); }

}  // namespace minicriu
