// The interface every kind of open file implements, both directions side by
// side: how an fd of that kind is recognised and dumped, and how it is opened
// again at restore. Orchestration never switches on kinds; it asks the registry.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

// What the dumper knows of one fd of one process.
struct FdDumpInfo {
  pid_t pid = 0;
  int fd = -1;             // -1 for files without an fd (cwd, exe, a mapping's file)
  std::string what;        // who holds it, for messages: "pid 12: fd 5", "pid 12: exe"
  std::string link;        // readlink of /proc/PID/fd/N
  proc::FdInfo fdinfo;
  struct stat st {};       // fstat of the fd itself (from the parasite)
  int local_fd = -1;       // our copy of it (same open file description)
};

class GhostStore;
class PipeStore;
class PipeRestorer;
class ShmemStore;
class ShmemRestorer;
class UnixSocketStore;
class UnixSocketRestorer;
class NetworkLock;
class InetSocketStore;
class InetSocketRestorer;
class TtyStore;
class TtyRestorer;

// What kinds may use while dumping: the stores of data shared by many fds.
struct FileDumpContext {
  GhostStore& ghosts;
  PipeStore& pipes;
  ShmemStore& shmem;
  // Names the dump made in the file system (link remaps): removed again if the
  // dump fails.
  std::vector<std::string>& created_links;
  // Every thread of the dumped tree (a process's pid is its leader's tid); they
  // come back with the same numbers. A pidfd may only point inside it. Null:
  // the tree is unknown, and every pidfd is refused.
  const std::vector<pid_t>* tree_tids = nullptr;
  // Unix sockets of the tree, whose peers are checked once every fd is seen.
  // Null: every unix socket is refused.
  UnixSocketStore* unix_sockets = nullptr;
  // TCP connections are locked here before their queues are read (null: no
  // lock, e.g. unit tests). See net/network_lock.hpp.
  NetworkLock* net_lock = nullptr;
  // Inet sockets of the tree (src/net/inet_socket.cc). Null: refused.
  InetSocketStore* inet_sockets = nullptr;
  // Pty ends of the tree (src/fs/tty.cc), whose masters are checked once
  // every fd is seen. Null: every pty is refused.
  TtyStore* ttys = nullptr;
};

// The fd that stands, in the restoring process, for fd number dumped_fd of the
// process being restored; -1 if that process had no such fd. Give the fd under
// its dumped number (the table already in place) where the kernel remembers
// the number: an epoll entry keeps the fd it was added with, and the
// application's later EPOLL_CTL_MOD/DEL name it by that number.
using FdLookup = std::function<int(int dumped_fd)>;

// What kinds may use while opening files again in a restored process.
struct FileRestoreContext {
  const std::map<uint32_t, std::string>* ghost_paths = nullptr;  // recreated ghosts by id
  PipeRestorer* pipes = nullptr;                                 // pipes created once each
  ShmemRestorer* shmem = nullptr;                                // memfds, shared memory
  // Files held by several processes of the tree, opened once before any of
  // them was created (file id -> an inherited fd): dup'd, never opened again,
  // so the processes share one open file description (one offset) as before.
  const std::map<uint32_t, int>* shared_files = nullptr;
  // Fds the restore keeps for itself (pipe ends, shmem objects) stay at or
  // above this number, clear of the fds being installed below it.
  int fd_floor = 0;
  UnixSocketRestorer* unix_sockets = nullptr;  // socket pairs created once each
  InetSocketRestorer* inet_sockets = nullptr;  // inet sockets created once each
  TtyRestorer* ttys = nullptr;                 // ptys created once each
};

class FileKind {
 public:
  virtual ~FileKind() = default;
  virtual const char* name() const = 0;
  // This kind handles the fd.
  virtual bool matches(const FdDumpInfo& fd) const = 0;
  // Fills the kind's part of entry (its id is set by the caller).
  [[nodiscard]] virtual Status dump(const FdDumpInfo& fd, img::FileEntry& entry,
                                    FileDumpContext& ctx) const = 0;
  // This kind restores the entry.
  virtual bool restores(const img::FileEntry& entry) const = 0;
  // Opens the file again as it was at the dump (flags, offset).
  [[nodiscard]] virtual Result<UniqueFd> open(const img::FileEntry& entry,
                                              const FileRestoreContext& ctx) const = 0;
  // Second pass, for files that refer to other fds of their process (an
  // epoll's interest list names target fds). open() creates such a file
  // without its references, since the fds they name may not exist yet; once
  // every fd of a process that holds the file is in place, the restore calls
  // restore_after() once per file entry, with the fd the file is open on and
  // a lookup of that process's fds. Kinds without references keep the
  // default, which does nothing, so the restore may call it for every entry.
  [[nodiscard]] virtual Status restore_after(const img::FileEntry& entry, int fd,
                                             const FdLookup& lookup) const {
    (void)entry, (void)fd, (void)lookup;
    return {};
  }
};

// Every kind this build knows, in the order they are asked.
const std::vector<const FileKind*>& file_kinds();

// The kind for an fd, or an error that says what the fd is and what to do.
[[nodiscard]] Result<const FileKind*> file_kind_for(const FdDumpInfo& fd);
[[nodiscard]] Result<const FileKind*> file_kind_for(const img::FileEntry& entry);

// Defined by each kind's file.
const FileKind& regular_file_kind();
const FileKind& ghost_file_kind();
const FileKind& pipe_kind();
const FileKind& memfd_kind();
const FileKind& fifo_kind();

const FileKind& eventfd_kind();
const FileKind& timerfd_kind();
const FileKind& signalfd_kind();
const FileKind& epoll_kind();
const FileKind& pidfd_kind();
const FileKind& inotify_kind();
const FileKind& unix_socket_kind();  // src/net/unix_socket.cc
const FileKind& tty_kind();          // src/fs/tty.cc
const FileKind& inet_socket_kind();  // src/net/inet_socket.cc

// The RegFile of an fd reached by path (regular and ghost files both).
void describe_reg_file(const FdDumpInfo& fd, const std::string& path, img::RegFile& reg);

// Reopens a file by path with its dumped flags and offset (regular and ghost
// files both end here).
[[nodiscard]] Result<UniqueFd> reopen_reg_file(const std::string& path, const img::RegFile& reg);

}  // namespace minicriu
