// The fd tables of a tree: which open file each fd holds. Files are recorded
// once per open file description (kcmp), so dup'd and inherited fds keep
// sharing one offset after restore.
#pragma once

#include <sys/types.h>

#include <vector>

#include <map>
#include <set>

#include "base/error.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"
#include "minicriu.pb.h"

namespace minicriu {

class ParasiteSession;

// files.img being built for a whole tree: each file dumped by the kind that
// takes it. env.files points at the entries.
class FileRegistry {
 public:
  FileRegistry(KindSet& kinds, DumpEnv& env) : kinds_(kinds), env_(env) {
    env_.files = &entries_;
    env_.add_file = [this](int local_fd, const std::string& what) { return add_unheld(local_fd, what); };
  }
  FileRegistry(const FileRegistry&) = delete;
  FileRegistry& operator=(const FileRegistry&) = delete;
  // The id of the file behind fd, dumping it the first time it is seen;
  // then every kind observes the fd (Kind::observe_fd).
  [[nodiscard]] Result<uint32_t> add(const FdDumpInfo& fd);
  // A file reached by a /proc link without an fd (cwd, root, exe).
  [[nodiscard]] Result<uint32_t> add_link(pid_t pid, const std::string& link_name);
  // The file behind a mapping whose file has no name left (a ghost), opened
  // through /proc/PID/map_files: read-write if the mapping may write it.
  [[nodiscard]] Result<uint32_t> add_deleted_mapping(pid_t pid, uint64_t start, uint64_t end,
                                                     bool writable_shared);
  // A file no fd of the tree holds (DumpEnv::add_file): our local_fd, dup'd
  // and kept while the registry lives.
  [[nodiscard]] Result<uint32_t> add_unheld(int local_fd, const std::string& what);
  // Once every file is taken, before the kinds check the tree: our copies of
  // the files no fd holds go (kinds look for holders outside the tree), and
  // one with a lock or a SIGIO owner that no fd of the tree holds either is
  // refused (those are restored through an fd).
  [[nodiscard]] Status drop_unheld();
  const std::vector<img::FileEntry>& entries() const { return entries_; }

 private:
  struct Seen {
    pid_t pid;
    int fd;
    dev_t dev;
    ino_t ino;
    uint32_t id;
  };
  [[nodiscard]] Result<uint32_t> add_entry(const FdDumpInfo& info);
  [[nodiscard]] Result<uint32_t> find_or_add(const FdDumpInfo& fd);

  KindSet& kinds_;
  DumpEnv& env_;
  std::vector<Seen> seen_;
  std::vector<img::FileEntry> entries_;
  std::vector<UniqueFd> unheld_;  // our copies of files no fd holds
  int taking_unheld_ = 0;         // nesting of add_unheld (a queue in a queue)
  std::vector<std::pair<uint32_t, std::string>> unheld_keeps_;  // id, what it keeps
  std::set<uint32_t> held_ids_;   // files an fd of the tree holds
};

// What /proc tells of one process's fds, read before the parasite opens its own.
struct FdListing {
  int fd;
  std::string link;
  proc::FdInfo fdinfo;
};
[[nodiscard]] Result<std::vector<FdListing>> list_fds(pid_t pid);

// Fetches the fds through the parasite and records each in the registry.
[[nodiscard]] Result<std::vector<img::FdEntry>> dump_fd_table(pid_t pid,
                                                              const std::vector<FdListing>& fds,
                                                              ParasiteSession& parasite,
                                                              FileRegistry& registry);

}  // namespace minicriu

namespace minicriu {

// Files held by several processes of the tree, opened once by their kinds
// before any of them is created (file id -> our fd, above floor): each
// process dups them, so they share one open file description (one offset)
// again, as inherited or passed fds did.
struct SharedFiles {
  std::map<uint32_t, UniqueFd> fds;
  int get(uint32_t id) const {
    auto it = fds.find(id);
    return it == fds.end() ? -1 : it->second.get();
  }
};
// held: the files that the kinds' objects hold (Kind::list_held()), opened
// here too.
[[nodiscard]] Result<SharedFiles> open_shared_files(const Checkpoint& c, const KindSet& kinds, int floor,
                                                    const std::set<uint32_t>& held = {});

// Restore side, run by the task being restored: installs the dumped fd table.
// Each file is opened once (by its kind, or dup'd from shared) and dup'd to
// every fd that held it, so dup'd fds share one open file description again;
// then each kind's open_after() sees the whole table. Every other fd below
// the highest dumped one is closed; `keep` (minicriu's own: the restore
// channel...) are first moved above the dumped fds, and updated to their new
// numbers as soon as they move, so the caller can still use them if a later
// step fails. Returns the first number above the dumped fds: everything there
// is the restore's own.
[[nodiscard]] Result<int> restore_fd_table(const ProcessImages& p, const Checkpoint& c, const KindSet& kinds,
                                      const SharedFiles& shared, std::vector<int>& keep);

// Closes every fd at or above floor but those in keep: what the restore opened
// for itself, once nothing needs it any more.
[[nodiscard]] Status close_fds_above(int floor, const std::vector<int>& keep);

}  // namespace minicriu
