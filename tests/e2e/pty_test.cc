// Pseudo-terminals at dump and restore: a pty whose master and slave are both
// in the tree comes back with its index, termios, window size, controlling
// terminal, foreground group and the bytes not yet read in either direction;
// a slave whose master is held outside the tree, and bytes that could not be
// put back, are refused in one line and the target keeps running untouched.
#include <gtest/gtest.h>
#include <poll.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(PtyDump, BothEndsAreRecordedWithTheirState) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("pty", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int masters = 0, slaves = 0;
  for (auto& f : view.files()) {
    if (!f.has_tty()) continue;
    (f.tty().master() ? masters : slaves)++;
    EXPECT_EQ(f.tty().pty().rows(), 37u);
    EXPECT_EQ(f.tty().pty().cols(), 101u);
    EXPECT_EQ(f.tty().pty().cc().at(0), '\x07');  // VINTR
  }
  EXPECT_EQ(masters, 1);
  EXPECT_EQ(slaves, 1);  // the child's fd 1, inherited by the grandchild
  int cttys = 0;
  for (auto& proc : view.processes())
    if (proc.pstree().has_ctty()) {
      cttys++;
      EXPECT_GT(proc.pstree().ctty().foreground_pgid(), 0);
      EXPECT_NE(static_cast<uint32_t>(proc.pstree().ctty().foreground_pgid()), proc.pstree().sid());
    }
  EXPECT_EQ(cttys, 2);  // the child and the grandchild
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.output.find("pty master /dev/pts/"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("non-canonical, no echo"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("controlling terminal: /dev/pts/"), std::string::npos) << text.output;
  expect_intact(p);
}

TEST(PtyRestore, BothEndsControllingTerminalAndForegroundComeBack) { cycle("pty", 2); }

TEST(PtyDump, ASlaveWhoseMasterIsOutsideTheTreeIsRefusedAndTargetLeftIntact) {
  TempDir dir;
  int m = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(m, 0);
  ASSERT_EQ(::grantpt(m), 0);
  ASSERT_EQ(::unlockpt(m), 0);
  std::string name = ::ptsname(m);
  // The program gets the slave as fd 0; we keep the master.
  pid_t pid = ::fork();
  if (pid == 0) {
    int s = ::open(name.c_str(), O_RDWR | O_NOCTTY);
    if (s < 0 || ::dup2(s, 0) != 0) ::_exit(126);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", dir.path()});
  expect_one_line_error(r, fmt::format("pid {}: fd 0: {} is a terminal whose master (/dev/ptmx) is outside "
                                       "the dumped tree", pid, name));
  EXPECT_FALSE(std::filesystem::exists(dir / "inventory.img"));
  ASSERT_TRUE(pid_exists(pid));
  // Its terminal still works: what we write to the master reaches its fd 0.
  ASSERT_EQ(::write(m, "x", 1), 1);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
  ::close(m);
}

TEST(PtyRestore, BytesQueuedInBothDirectionsComeBackTwice) {
  // Cooked: the line ends and a line still being typed; raw: as they were.
  cycle("ptyqueue", 2, {"canon"});
  cycle("ptyqueue", 2, {"raw"});
  cycle("pty", 2, {"queued"});
}

TEST(PtyDump, BytesQueuedInBothDirectionsAreInTheImagesProcessedOnce) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ptyqueue", dir, {"canon"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int masters = 0;
  for (auto& f : view.files()) {
    if (!f.has_tty()) continue;
    if (!f.tty().master()) {
      EXPECT_TRUE(f.tty().queued_output().empty() && f.tty().queued_input().empty());
      continue;
    }
    masters++;
    EXPECT_EQ(f.tty().queued_output(), "child-out\r\nline one\r\npartial");  // ONLCR and the echo, once
    EXPECT_EQ(f.tty().queued_input(), "line one\npartial");                  // ICRNL, once
  }
  EXPECT_EQ(masters, 1);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("queued: 28 byte(s) for the master, 16 for the slave"), std::string::npos)
      << text.output;
  // Put back at the dump: the program reads them as they were.
  expect_intact(p);
}

TEST(PtyDump, ARefusedDumpPutsTheQueuedBytesBack) {
  // The pty's bytes are read out before the F_SETOWN owner outside the tree
  // is refused: the tree gets them back, line ends included.
  expect_dump_refused("ptyqueue", {"outside"}, [](pid_t pid) {
    return std::vector<std::string>{fmt::format("pid {}: fd ", pid),
                                    "its signal-driven I/O owner (F_SETOWN) is process"};
  });
}

TEST(PtyDump, BytesAtAMasterWhoseSlaveNoProcessOfTheTreeHoldsAreRefusedAndTargetLeftIntact) {
  expect_dump_refused("ptyqueue", {"noslave"}, [](pid_t pid) {
    return std::vector<std::string>{
        fmt::format("pid {}: fd 3 (the master of /dev/pts/", pid),
        "has 1 byte(s) written to the terminal and not yet read, and no process of the dumped tree holds its "
        "slave, through which they would be put back; let the application read them and dump again"};
  });
}

namespace {

// basic with the slave of a pty we hold as its fd 0.
pid_t start_on_our_pty(const TempDir& dir, const std::string& slave) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int s = ::open(slave.c_str(), O_RDWR | O_NOCTTY);
    if (s < 0 || ::dup2(s, 0) != 0) ::_exit(126);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  return pid;
}

struct OurPty {
  int master = -1;
  unsigned index = 0;
  std::string slave;
  OurPty() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) return;
    ::ioctl(master, TIOCGPTN, &index);
    slave = ::ptsname(master);
  }
  ~OurPty() { close(); }
  void close() {
    if (master >= 0) ::close(master);
    master = -1;
  }
};

}  // namespace

TEST(PtyRestore, AnExternalTerminalIsReopenedByPathWhileItsMasterLives) {
  TempDir dir;
  OurPty pty;
  ASSERT_GE(pty.master, 0);
  pid_t pid = start_on_our_pty(dir, pty.slave);
  RestoredTree started;  // killed if a check below fails
  started.add(pid);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  std::string images = images_dir(dir);
  auto d = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images, "--external",
                         fmt::format("tty[{}]", pty.index)});
  ASSERT_EQ(d.status, 0) << d.output;
  EXPECT_TRUE(wait_gone(pid));
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find(fmt::format("pty slave {} (flags 02), external", pty.slave)), std::string::npos)
      << text.output;
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  // Its fd 0 is our terminal again: what we write to the master is there.
  char link[64] = {};
  ASSERT_GT(::readlink(fmt::format("/proc/{}/fd/0", pid).c_str(), link, sizeof link - 1), 0);
  EXPECT_EQ(std::string(link), pty.slave);
  // Seen through a copy of its fd 0: a line written to our master arrives.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ASSERT_GE(pidfd, 0);
  int copy = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, 0, 0));
  ASSERT_GE(copy, 0);
  ASSERT_EQ(::write(pty.master, "x\n", 2), 2);
  pollfd in{copy, POLLIN, 0};
  ASSERT_EQ(::poll(&in, 1, 5000), 1);
  char line[8] = {};
  EXPECT_EQ(::read(copy, line, sizeof line), 2);
  EXPECT_EQ(std::string(line), "x\n");
  ::close(copy);
  ::close(pidfd);
  std::string fdinfo = read_text(fmt::format("/proc/{}/fdinfo/0", pid));
  EXPECT_NE(fdinfo.find("flags:\t0100002"), std::string::npos) << fdinfo;  // O_RDWR, O_LARGEFILE
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
}

TEST(PtyRestore, AnExternalTerminalWhoseMasterIsGoneFailsInOneLine) {
  TempDir dir;
  OurPty pty;
  ASSERT_GE(pty.master, 0);
  pid_t pid = start_on_our_pty(dir, pty.slave);
  RestoredTree started;  // killed if a check below fails
  started.add(pid);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  std::string images = images_dir(dir);
  auto d = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images, "--external",
                         fmt::format("tty[{}]", pty.index)});
  ASSERT_EQ(d.status, 0) << d.output;
  EXPECT_TRUE(wait_gone(pid));
  reap_zombies();
  pty.close();
  auto r = run_minicriu({"restore", "-D", images, "-d"});
  expect_one_line_error(r, fmt::format("{}, the terminal outside the tree that the checkpoint reopens by "
                                       "path, is ", pty.slave));
  EXPECT_FALSE(pid_exists(pid));
}

TEST(PtyDump, AMasterWhoseSlaveIsHeldOutsideTheTreeIsRefusedAndTargetLeftIntact) {
  TempDir dir;
  Program p("pty", dir);
  ASSERT_TRUE(p.wait_ready());
  // The parent's master is its fd 3: open its slave here too.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, p.pid(), 0));
  ASSERT_GE(pidfd, 0);
  int master = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, 3, 0));
  ASSERT_GE(master, 0);
  unsigned index = 0;
  ASSERT_EQ(::ioctl(master, TIOCGPTN, &index), 0);
  ::close(master);
  ::close(pidfd);
  std::string slave = fmt::format("/dev/pts/{}", index);
  int ours = ::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(ours, 0);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, fmt::format("pid {}: fd 3: /dev/ptmx, the master of {}, whose terminal is also held "
                                       "by pid {} (", p.pid(), slave, ::getpid()));
  EXPECT_FALSE(std::filesystem::exists(images_dir(dir) + "/inventory.img"));
  ::close(ours);
  expect_intact(p);
}
