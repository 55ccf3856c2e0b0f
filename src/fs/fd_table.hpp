// The fd tables of a tree: which open file each fd holds. Files are recorded
// once per open file description (kcmp), so dup'd and inherited fds keep
// sharing one offset after restore.
#pragma once

#include <sys/types.h>

#include <vector>

#include "base/error.hpp"
#include "fs/file_kind.hpp"
#include "minicriu.pb.h"

namespace minicriu {

class ParasiteSession;

// files.img being built for a whole tree.
class FileRegistry {
 public:
  explicit FileRegistry(FileDumpContext ctx) : ctx_(ctx) {}
  // The id of the file behind fd, dumping it the first time it is seen.
  [[nodiscard]] Result<uint32_t> add(const FdDumpInfo& fd);
  // A file reached by a /proc link without an fd (cwd, root, exe).
  [[nodiscard]] Result<uint32_t> add_link(pid_t pid, const std::string& link_name);
  // The file behind a mapping whose file has no name left (a ghost), opened
  // through /proc/PID/map_files: read-write if the mapping may write it.
  [[nodiscard]] Result<uint32_t> add_deleted_mapping(pid_t pid, uint64_t start, uint64_t end,
                                                     bool writable_shared);
  const std::vector<img::FileEntry>& entries() const { return entries_; }
  // For checks and kinds that complete entries once the whole tree is seen (a
  // unix socket's peer accepted as external, inet connections waiting to be
  // accepted, a unix listener's connections not yet accepted).
  std::vector<img::FileEntry>& mutable_entries() { return entries_; }

 private:
  struct Seen {
    pid_t pid;
    int fd;
    dev_t dev;
    ino_t ino;
    uint32_t id;
  };
  [[nodiscard]] Result<uint32_t> add_entry(const FdDumpInfo& info);

  FileDumpContext ctx_;
  std::vector<Seen> seen_;
  std::vector<img::FileEntry> entries_;
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

// Restore side, run by the task being restored: installs the dumped fd table.
// Each file is opened once (by its kind, with ctx) and dup'd to every fd that
// held it, so dup'd fds share one open file description again. Every other fd
// below the highest dumped one is closed; `keep` (minicriu's own: the restore
// channel...) are first moved above the dumped fds, and updated to their new
// numbers as soon as they move, so the caller can still use them if a later
// step fails. ctx.fd_floor is set to the first number above the dumped fds.
[[nodiscard]] Status restore_fd_table(const std::vector<img::FdEntry>& fds,
                                      const std::vector<img::FileEntry>& files,
                                      std::vector<int>& keep, FileRestoreContext& ctx);

// Closes every fd at or above floor but those in keep: what the restore opened
// for itself, once nothing needs it any more.
[[nodiscard]] Status close_fds_above(int floor, const std::vector<int>& keep);

}  // namespace minicriu
