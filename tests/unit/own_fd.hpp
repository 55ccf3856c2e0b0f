// For the tests of file kinds: an fd of the test process described as the
// dumper describes a target's fd (/proc/self/fd, /proc/self/fdinfo, fstat),
// and a dump context with empty stores. The kind's dump and open run on real
// kernel objects, in-process.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "fs/file_kind.hpp"
#include "fs/ghost_file.hpp"
#include "fs/ghost_policy.hpp"
#include "fs/pipe.hpp"
#include "images/image_dir.hpp"
#include "mem/shmem.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu::testing {

// Our own fd as the dumper sees a target's. local_fd is the fd itself: the
// dumper's copy is the same open file description.
inline FdDumpInfo own_fd(int fd) {
  FdDumpInfo info;
  info.pid = ::getpid();
  info.fd = fd;
  info.what = "pid " + std::to_string(info.pid) + ": fd " + std::to_string(fd);
  info.link = proc::read_link("/proc/self/fd/" + std::to_string(fd)).value();
  auto text = proc::read_file("/proc/self/fdinfo/" + std::to_string(fd)).value();
  info.fdinfo = proc::parse_fdinfo(text).value();
  EXPECT_EQ(::fstat(fd, &info.st), 0);
  info.local_fd = fd;
  return info;
}

// A dump context whose stores are empty and never written.
class DumpContextFixture {
 public:
  DumpContextFixture()
      : dir_("/nonexistent"), ghosts_(dir_, GhostPolicy(), log_), pipes_(dir_), shmem_(dir_, log_) {}
  FileDumpContext& ctx() { return ctx_; }
  void set_tree(std::vector<pid_t> tids) {
    tids_ = std::move(tids);
    ctx_.tree_tids = &tids_;
  }

 private:
  Logger log_;
  ImageDir dir_;
  GhostStore ghosts_;
  PipeStore pipes_;
  ShmemStore shmem_;
  std::vector<std::string> links_;
  std::vector<pid_t> tids_;
  FileDumpContext ctx_{ghosts_, pipes_, shmem_, links_};
};

// Dumps fd with the kind that claims it; fails the test if none does.
inline Result<img::FileEntry> dump_own_fd(int fd, DumpContextFixture& fx) {
  FdDumpInfo info = own_fd(fd);
  ASSIGN_OR_RETURN(const FileKind* kind, file_kind_for(info));
  img::FileEntry entry;
  entry.set_id(1);
  TRY(kind->dump(info, entry, fx.ctx()));
  return entry;
}

// Opens the entry again with the kind that restores it.
inline Result<UniqueFd> open_entry(const img::FileEntry& entry) {
  ASSIGN_OR_RETURN(const FileKind* kind, file_kind_for(entry));
  FileRestoreContext ctx;
  return kind->open(entry, ctx);
}

}  // namespace minicriu::testing
