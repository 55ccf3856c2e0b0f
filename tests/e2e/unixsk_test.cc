// Unix socket pairs at dump and restore: queues in both directions carried
// without being consumed, pairs between two processes and inside one, and a
// socket whose peer is held outside the tree refused in one line.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <linux/sockios.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(UnixSocketDump, TheProgramPassesItsChecksWithoutACheckpoint) {
  TempDir dir;
  Program p("unixsk", dir);
  ASSERT_TRUE(p.wait_ready());
  expect_intact(p);
}

TEST(UnixSocketDump, QueuesAreRecordedAndNotConsumed) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("unixsk", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  // type -> bytes queued on each socket of that type
  std::multiset<std::pair<uint32_t, size_t>> queued;
  std::multiset<int> dgram_messages;
  std::map<uint64_t, uint64_t> peers;
  for (auto& f : view.files()) {
    if (!f.has_unix_sk()) continue;
    size_t bytes = 0;
    for (auto& m : f.unix_sk().queue()) bytes += m.size();
    queued.insert({f.unix_sk().type(), bytes});
    peers[f.unix_sk().ino()] = f.unix_sk().peer_ino();
    if (f.unix_sk().type() == SOCK_DGRAM) dgram_messages.insert(f.unix_sk().queue_size());
  }
  EXPECT_EQ(queued, (std::multiset<std::pair<uint32_t, size_t>>{
                        {SOCK_STREAM, 20000}, {SOCK_STREAM, 3000},
                        {SOCK_SEQPACKET, 10 + 12 + 28}, {SOCK_SEQPACKET, 8 + 19},
                        {SOCK_DGRAM, 2 + 19 + 32}, {SOCK_DGRAM, 0}}));
  EXPECT_EQ(dgram_messages, (std::multiset<int>{0, 3}));
  ASSERT_EQ(peers.size(), 6u);
  for (auto& [ino, peer] : peers) EXPECT_EQ(peers[peer], ino) << "socket:[" << ino << "]";
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.output.find("unix seqpacket socket:["), std::string::npos) << text.output;
  expect_intact(p);
}

TEST(UnixSocketRestore, PairsWithDataInFlightAcrossTwoProcesses) { cycle("unixsk", 2, {}, false); }

// Fds in flight (a regular file, a pipe end, a unix socket, a dup of a file
// also held) and credentials (of a child of the tree, of another uid) in
// stream, seqpacket and datagram queues, a named datagram socket's too.
TEST(UnixSocketRestore, FilesAndCredentialsInFlightComeBackTwice) { cycle("unixscm", 2); }

TEST(UnixSocketDump, FilesInFlightAreEntriesOfTheirOwnKinds) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("unixscm", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  std::set<uint32_t> ids;
  int controls = 0, creds = 0;
  for (auto& f : view.files()) {
    if (!f.has_unix_sk()) continue;
    for (auto& c : f.unix_sk().queue_control()) {
      controls++;
      creds += c.has_creds();
      ids.insert(c.file_ids().begin(), c.file_ids().end());
    }
  }
  // stream: 1 message with 2 files; seqpacket: 1 with 2; dgram: 3 with
  // credentials, one of them with a file; the named socket: 1 with a file;
  // the SO_PASSPIDFD receiver's: 2 with their senders' credentials.
  EXPECT_EQ(controls, 8);
  EXPECT_EQ(creds, 5);
  EXPECT_EQ(ids.size(), 6u);
  int reg = 0, pipe = 0, unix_sk = 0;
  for (auto& f : view.files()) {
    if (!ids.count(f.id())) continue;
    reg += f.has_reg();
    pipe += f.has_pipe();
    unix_sk += f.has_unix_sk();
  }
  EXPECT_EQ(reg, 4);
  EXPECT_EQ(pipe, 1);
  EXPECT_EQ(unix_sk, 1);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("file(s) in flight or credentials"), std::string::npos) << text.output;
  expect_intact(p);
}

TEST(UnixSocketDump, ALockedFileOnlyInFlightIsRefusedInOneLineAndTheTargetRunsOn) {
  TempDir dir;
  Program p("unixscm", dir, {"locked"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "locked.txt) has a file lock, which minicriu restores only through an fd of the tree");
  EXPECT_NE(r.output.find(fmt::format("pid {}: fd ", p.pid())), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  expect_intact(p);
}

TEST(UnixSocketDump, ASocketInFlightInItsOwnQueueIsRefusedInOneLineAndTheTargetRunsOn) {
  TempDir dir;
  Program p("unixscm", dir, {"cycle"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "files in flight inside files in flight nest more than 4 deep");
  EXPECT_NE(r.output.find(fmt::format("pid {}: fd ", p.pid())), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  expect_intact(p);
}

TEST(UnixSocketDump, APeerOutsideTheTreeIsRefusedAndTargetLeftIntact) {
  TempDir dir;
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  struct stat ours, theirs;
  ASSERT_EQ(::fstat(sv[0], &theirs), 0);
  ASSERT_EQ(::fstat(sv[1], &ours), 0);
  // The program gets one socket as fd 0; we keep its peer.
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(sv[0], 0);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  ::close(sv[0]);
  ASSERT_EQ(::send(sv[1], "queued", 6, 0), 6);
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", dir.path()});
  expect_one_line_error(r, fmt::format("pid {}: fd 0: unix stream socket:[{}] is connected to socket:[{}] "
                                       "held by pid {} (", pid, theirs.st_ino, ours.st_ino, ::getpid()));
  EXPECT_NE(r.output.find("outside the dumped tree"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(fmt::format("pass --external unix[{}] (or --ext-unix-sk", theirs.st_ino)),
            std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "inventory.img"));
  // Intact: still running, the bytes queued toward it unread (seen through a
  // copy of its fd 0), and it passes its checks.
  ASSERT_TRUE(pid_exists(pid));
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ASSERT_GE(pidfd, 0);
  int copy = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, 0, 0));
  ASSERT_GE(copy, 0);
  int inq = -1;
  ASSERT_EQ(::ioctl(copy, SIOCINQ, &inq), 0);
  EXPECT_EQ(inq, 6);
  char buf[16] = {};
  EXPECT_EQ(::recv(copy, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT), 6);
  EXPECT_EQ(std::string(buf), "queued");
  ::close(copy);
  ::close(pidfd);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
  ::close(sv[1]);
}
