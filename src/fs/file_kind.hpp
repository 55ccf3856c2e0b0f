// The interface every kind of open file implements, both directions side by
// side: how an fd of that kind is recognised and dumped, and how it is opened
// again at restore. Orchestration never switches on kinds; it asks the registry.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/unique_fd.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

// What the dumper knows of one fd of one process.
struct FdDumpInfo {
  pid_t pid = 0;
  int fd = -1;
  std::string link;        // readlink of /proc/PID/fd/N
  proc::FdInfo fdinfo;
  struct stat st {};       // fstat of the fd itself (from the parasite)
  int local_fd = -1;       // our copy of it (same open file description)
};

class FileKind {
 public:
  virtual ~FileKind() = default;
  virtual const char* name() const = 0;
  // This kind handles the fd.
  virtual bool matches(const FdDumpInfo& fd) const = 0;
  // Fills the kind's part of entry (its id is set by the caller).
  [[nodiscard]] virtual Status dump(const FdDumpInfo& fd, img::FileEntry& entry) const = 0;
  // This kind restores the entry.
  virtual bool restores(const img::FileEntry& entry) const = 0;
  // Opens the file again as it was at the dump (flags, offset).
  [[nodiscard]] virtual Result<UniqueFd> open(const img::FileEntry& entry) const = 0;
};

// Every kind this build knows, in the order they are asked.
const std::vector<const FileKind*>& file_kinds();

// The kind for an fd, or an error that says what the fd is and what to do.
[[nodiscard]] Result<const FileKind*> file_kind_for(const FdDumpInfo& fd);
[[nodiscard]] Result<const FileKind*> file_kind_for(const img::FileEntry& entry);

// Defined by each kind's file.
const FileKind& regular_file_kind();

}  // namespace minicriu
