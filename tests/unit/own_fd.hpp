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

#include "base/external.hpp"
#include "base/log.hpp"
#include "images/image_dir.hpp"
#include "kinds/kind_set.hpp"
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

// The kinds of a dump that writes nothing, and what they see of it.
class DumpContextFixture {
 public:
  DumpContextFixture() : dir_("/nonexistent"), kinds_(KindSet::make()), env_{options_, dir_, log_, external_} {
    env_.files = &files_;
    auto st = kinds_.each("begin", [&](Kind& k) { return k.begin(env_); });
    EXPECT_TRUE(st) << st.error().what();
  }
  DumpEnv& env() { return env_; }
  KindSet& kinds() { return kinds_; }
  void set_tree(std::vector<pid_t> tids) { env_.tree_tids = std::move(tids); }

 private:
  DumpOptions options_;
  Logger log_;
  ImageDir dir_;
  ExternalPolicy external_;
  KindSet kinds_;
  DumpEnv env_;
  std::vector<img::FileEntry> files_;
};

// Dumps info with the kind that takes it into entry.
inline Status take_fd(const FdDumpInfo& info, img::FileEntry& entry, DumpContextFixture& fx) {
  ASSIGN_OR_RETURN(Kind * kind, fx.kinds().taker(info));
  return kind->take(info, entry, fx.env());
}

// Dumps fd with the kind that takes it; fails if none does.
inline Result<img::FileEntry> dump_own_fd(int fd, DumpContextFixture& fx) {
  img::FileEntry entry;
  entry.set_id(1);
  TRY(take_fd(own_fd(fd), entry, fx));
  return entry;
}

// The kinds of a restore that loaded nothing: enough for kinds whose files
// stand alone (eventfd, epoll...).
inline KindSet& restore_kinds() {
  static KindSet kinds = KindSet::make();
  return kinds;
}

// Opens the entry again with the kind that restores it.
inline Result<UniqueFd> open_entry(const img::FileEntry& entry) { return restore_kinds().open(entry); }

}  // namespace minicriu::testing
