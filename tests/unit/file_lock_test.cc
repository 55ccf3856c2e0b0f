// The "lock:" lines of /proc/PID/fdinfo/N, from recorded samples (Linux 6.18),
// and the lines of our own locks read back live.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/unique_fd.hpp"
#include "fs/file_lock.hpp"
#include "proc/proc_parse.hpp"

using namespace minicriu;

TEST(LockLines, EveryKindAsTheKernelPrintsIt) {
  const std::string text =
      "pos:\t0\nflags:\t0120000\nmnt_id:\t27\nino:\t10952858\n"
      "lock:\t1: POSIX  ADVISORY  WRITE 2334 fe:00:10952858 10 14\n"
      "lock:\t2: POSIX  ADVISORY  READ 2334 fe:00:10952858 100 EOF\n"
      "lock:\t3: OFDLCK ADVISORY  WRITE -1 fe:00:10952858 0 0\n"
      "lock:\t4: FLOCK  ADVISORY  READ 2334 fe:00:10952858 0 EOF\n"
      "lock:\t5: LEASE  BREAKING  UNLCK 2334 fe:00:10952858 0 EOF\n";
  auto lines = parse_lock_lines(text);
  ASSERT_TRUE(lines) << lines.error().what();
  ASSERT_EQ(lines->size(), 5u);
  const LockLine& w = (*lines)[0];
  EXPECT_EQ(w.kind, "POSIX");
  EXPECT_EQ(w.type, "WRITE");
  EXPECT_EQ(w.pid, 2334);
  EXPECT_EQ(w.dev, "fe:00");
  EXPECT_EQ(w.ino, 10952858u);
  EXPECT_EQ(w.start, 10u);
  EXPECT_EQ(w.end, 14u);
  EXPECT_FALSE(w.to_eof);
  EXPECT_TRUE((*lines)[1].to_eof);
  EXPECT_EQ((*lines)[2].kind, "OFDLCK");
  EXPECT_EQ((*lines)[2].pid, -1);
  EXPECT_EQ((*lines)[3].kind, "FLOCK");
  EXPECT_EQ((*lines)[4].kind, "LEASE");
  EXPECT_EQ((*lines)[4].state, "BREAKING");
  EXPECT_EQ((*lines)[4].type, "UNLCK");
}

TEST(LockLines, NoLockNoLineAndAMalformedOneIsAnError) {
  auto none = parse_lock_lines("pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t5\n");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(parse_lock_lines("lock:\t1: POSIX  ADVISORY  WRITE\n"));
  EXPECT_FALSE(parse_lock_lines("lock:\t1: POSIX  ADVISORY  WRITE 1 fe:00:x 0 EOF\n"));
}

TEST(LockLines, OurOwnLocksAsFdinfoShowsThem) {
  char tmpl[] = "/tmp/minicriu-lock-XXXXXX";
  UniqueFd fd(::mkstemp(tmpl));
  ASSERT_TRUE(fd);
  ::unlink(tmpl);
  struct flock f {};
  f.l_type = F_WRLCK;
  f.l_whence = SEEK_SET;
  f.l_start = 5;
  f.l_len = 3;
  ASSERT_EQ(::fcntl(fd.get(), F_SETLK, &f), 0);
  ASSERT_EQ(::flock(fd.get(), LOCK_SH), 0);
  auto text = proc::read_file("/proc/self/fdinfo/" + std::to_string(fd.get()));
  ASSERT_TRUE(text);
  auto lines = parse_lock_lines(*text);
  ASSERT_TRUE(lines) << lines.error().what();
  ASSERT_EQ(lines->size(), 2u) << *text;
  // flock locks are listed before POSIX ones (show_fd_locks).
  EXPECT_EQ((*lines)[0].kind, "FLOCK");
  EXPECT_EQ((*lines)[0].type, "READ");
  EXPECT_EQ((*lines)[1].kind, "POSIX");
  EXPECT_EQ((*lines)[1].pid, ::getpid());
  EXPECT_EQ((*lines)[1].start, 5u);
  EXPECT_EQ((*lines)[1].end, 7u);
}
