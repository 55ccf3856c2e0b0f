// Ptys: the device-number arithmetic, the check that every slave's master is
// in the tree, and a pty of the test process dumped and created again by
// TtyRestorer (termios, window size, lock, descriptions, the index).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>

#include "fs/tty.hpp"
#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

// new_encode_dev(MKDEV(major, minor)), as /proc/PID/stat prints tty_nr.
uint32_t encode_dev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

struct OwnPty {
  UniqueFd master, slave;
  unsigned index = 0;
};

OwnPty open_pty() {
  OwnPty p;
  p.master = UniqueFd(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  EXPECT_TRUE(p.master);
  EXPECT_EQ(::unlockpt(p.master.get()), 0);
  EXPECT_EQ(::ioctl(p.master.get(), TIOCGPTN, &p.index), 0);
  p.slave = UniqueFd(::open(::ptsname(p.master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  EXPECT_TRUE(p.slave);
  return p;
}

Result<img::FileEntry> dump_end(int fd, uint32_t id, TtyStore& store) {
  DumpContextFixture fx;
  img::FileEntry e;
  e.set_id(id);
  FdDumpInfo info = own_fd(fd);
  EXPECT_EQ(std::string(fx.kinds().taker(info).value()->name()), "pty") << info.link;
  TRY(dump_tty_end(info, e, store));
  return e;
}

}  // namespace

TEST(Tty, PtsIndexFromStatTtyNr) {
  EXPECT_EQ(pts_index_of_tty_nr(encode_dev(136, 0)), 0u);
  EXPECT_EQ(pts_index_of_tty_nr(34816 + 5), 5u);
  EXPECT_EQ(pts_index_of_tty_nr(encode_dev(136, 300)), 300u);
  EXPECT_EQ(pts_index_of_tty_nr(encode_dev(136, 70000)), 70000u);
  EXPECT_FALSE(pts_index_of_tty_nr(0));                   // no terminal
  EXPECT_FALSE(pts_index_of_tty_nr(encode_dev(4, 1)));    // /dev/tty1
  EXPECT_FALSE(pts_index_of_tty_nr(encode_dev(5, 1)));    // /dev/console
}

TEST(Tty, DeviceNumbersOfBothEnds) {
  EXPECT_EQ(pts_index_of_rdev(::makedev(136, 7)), 7u);
  EXPECT_EQ(pts_index_of_rdev(::makedev(136, 70000)), 70000u);
  EXPECT_FALSE(pts_index_of_rdev(::makedev(4, 7)));
  EXPECT_TRUE(is_ptmx_rdev(::makedev(5, 2)));
  EXPECT_FALSE(is_ptmx_rdev(::makedev(5, 0)));  // /dev/tty is not a master
}

TEST(Tty, ControllingTtyOnlyForAPts) {
  auto ct = controlling_tty(encode_dev(136, 3), 42);
  ASSERT_TRUE(ct);
  EXPECT_EQ(ct->pts_index(), 3u);
  EXPECT_EQ(ct->foreground_pgid(), 42);
  EXPECT_FALSE(controlling_tty(0, -1));
  EXPECT_FALSE(controlling_tty(encode_dev(4, 1), 42));
}

TEST(Tty, StatHasTtyNrAndTpgid) {
  std::string text =
      "77 (sh) S 1 77 77 34819 80 4194304 100 0 0 0 1 2 0 0 20 0 1 0 555 1000 50 "
      "18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 7 8 9 10 0\n";
  auto s = proc::parse_stat(text);
  ASSERT_TRUE(s) << s.error().what();
  EXPECT_EQ(s->tty_nr, 34819u);
  EXPECT_EQ(s->tpgid, 80);
  EXPECT_EQ(pts_index_of_tty_nr(s->tty_nr), 3u);
}

TEST(Tty, ASlaveWithoutItsMasterIsRefusedNamingIt) {
  TtyStore store;
  std::vector<img::FileEntry> files(2);
  files[0].set_id(7);
  files[0].mutable_tty()->set_index(1);
  files[1].set_id(8);
  files[1].mutable_tty()->set_index(4);
  store.add_master(1, "pid 10: fd 3");
  store.add_slave(1, 7, 11, 1, "pid 11: fd 1", "/dev/pts/1", 0);
  EXPECT_TRUE(store.check_masters(ExternalPolicy(), files));
  store.add_slave(4, 8, 12, 0, "pid 12: fd 0", "/dev/pts/4", 0);
  auto st = store.check_masters(ExternalPolicy(), files);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("pid 12: fd 0: /dev/pts/4 is a terminal whose master (/dev/ptmx) is "
                                   "outside the dumped tree"), std::string::npos) << st.error().what();
  EXPECT_NE(st.error().what().find("pass --external tty[4]"), std::string::npos) << st.error().what();
  // Accepted: marked external, the slave of a master in the tree is not.
  DumpOptions opts;
  opts.external = {"tty[4]"};
  auto policy = ExternalPolicy::from_options(opts);
  ASSERT_TRUE(policy);
  EXPECT_TRUE(store.check_masters(*policy, files));
  EXPECT_FALSE(files[0].tty().external());
  EXPECT_TRUE(files[1].tty().external());
}

TEST(Tty, StateSummary) {
  img::PtyState st;
  st.set_lflag(ICANON | ECHO | ISIG);
  st.set_oflag(OPOST);
  st.set_ospeed(38400);
  std::string cc(19, '\0');
  cc[VINTR] = 3;
  cc[VMIN] = 1;
  st.set_cc(cc);
  st.set_rows(24);
  st.set_cols(80);
  EXPECT_EQ(pty_state_summary(st), "canonical, echo, 38400 baud, VMIN 1 VTIME 0, VINTR 0x3, 24x80");
  st.set_lflag(0);
  st.set_oflag(0);
  st.set_packet_mode(true);
  EXPECT_EQ(pty_state_summary(st), "non-canonical, no echo, no signals, no output processing, 38400 baud, "
                                   "VMIN 1 VTIME 0, VINTR 0x3, 24x80, packet mode");
}

TEST(Tty, QueuedBytesAreReadOutRawAndPutBack) {
  OwnPty p = open_pty();
  termios t;
  ASSERT_EQ(::tcgetattr(p.slave.get(), &t), 0);
  ::cfmakeraw(&t);
  ASSERT_EQ(::tcsetattr(p.slave.get(), TCSANOW, &t), 0);
  ASSERT_EQ(::write(p.slave.get(), "abc", 3), 3);
  ASSERT_EQ(::write(p.master.get(), "xy", 2), 2);
  TtyStore store;
  auto m = dump_end(p.master.get(), 1, store);
  ASSERT_TRUE(m) << m.error().what();
  auto s = dump_end(p.slave.get(), 2, store);
  ASSERT_TRUE(s) << s.error().what();
  std::vector<img::FileEntry> files{*m, *s};
  auto st = store.take_queued(files);
  ASSERT_TRUE(st) << st.error().what();
  EXPECT_EQ(files[0].tty().queued_output(), "abc");
  EXPECT_EQ(files[0].tty().queued_input(), "xy");
  EXPECT_TRUE(files[1].tty().queued_output().empty());
  int left = -1;
  EXPECT_EQ(::ioctl(p.master.get(), FIONREAD, &left), 0);
  EXPECT_EQ(left, 0);
  // As after a failed dump: back where they were, processed once.
  store.put_back_queued(Logger());
  ::usleep(20000);  // the flip buffer reaches the master's line discipline in a work item
  char buf[8] = {};
  EXPECT_EQ(::read(p.master.get(), buf, sizeof buf), 3);
  EXPECT_EQ(std::string(buf), "abc");
  char in[8] = {};
  EXPECT_EQ(::read(p.slave.get(), in, sizeof in), 2);
  EXPECT_EQ(std::string(in), "xy");
  termios now;
  ASSERT_EQ(::tcgetattr(p.slave.get(), &now), 0);
  EXPECT_EQ(now.c_lflag, t.c_lflag);
  EXPECT_EQ(now.c_oflag, t.c_oflag);
  EXPECT_EQ(now.c_iflag, t.c_iflag);
}

TEST(Tty, BytesAtAMasterWithoutASlaveInTheTreeAreRefusedAndLeftInPlace) {
  OwnPty p = open_pty();
  ASSERT_EQ(::write(p.slave.get(), "abc", 3), 3);
  ::usleep(20000);
  TtyStore store;
  auto m = dump_end(p.master.get(), 1, store);
  ASSERT_TRUE(m) << m.error().what();
  std::vector<img::FileEntry> files{*m};
  auto st = store.take_queued(files);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("has 3 byte(s) written to the terminal and not yet read, and no process of the "
                                   "dumped tree holds its slave"), std::string::npos)
      << st.error().what();
  char buf[8] = {};
  EXPECT_EQ(::read(p.master.get(), buf, sizeof buf), 3);  // left in place
  EXPECT_EQ(std::string(buf), "abc");
}

TEST(Tty, APtyComesBackWithItsStateAndEachDescription) {
  std::vector<img::FileEntry> files;
  unsigned index = 0;
  {
    // The store keeps the ends it read queued bytes through (to put them
    // back if the dump fails): gone with it, as at the end of a dump.
    TtyStore store;
    OwnPty p = open_pty();
    index = p.index;
    termios t;
    ASSERT_EQ(::tcgetattr(p.slave.get(), &t), 0);
    ::cfmakeraw(&t);
    t.c_cc[VMIN] = 3;
    ASSERT_EQ(::tcsetattr(p.slave.get(), TCSANOW, &t), 0);
    winsize ws{50, 132, 0, 0};
    ASSERT_EQ(::ioctl(p.master.get(), TIOCSWINSZ, &ws), 0);
    int one = 1;
    ASSERT_EQ(::ioctl(p.master.get(), TIOCPKT, &one), 0);
    ASSERT_EQ(::fcntl(p.slave.get(), F_SETFL, O_NONBLOCK), 0);
    UniqueFd second(::open(::ptsname(p.master.get()), O_RDONLY | O_NOCTTY | O_CLOEXEC));
    ASSERT_TRUE(second);
    for (auto [fd, id] : {std::pair{p.master.get(), 1u}, {p.slave.get(), 2u}, {second.get(), 3u}}) {
      auto e = dump_end(fd, id, store);
      ASSERT_TRUE(e) << e.error().what();
      files.push_back(*e);
    }
    ASSERT_TRUE(store.check_masters(ExternalPolicy(), files));
  }  // the pty is gone: its index is free again (unless another test took it)
  EXPECT_TRUE(files[0].tty().master());
  EXPECT_EQ(files[1].tty().index(), index);
  EXPECT_TRUE(files[0].tty().pty().packet_mode());

  Logger log;
  auto r = TtyRestorer::create_all(files, 100, log);
  ASSERT_TRUE(r) << r.error().what();
  auto master = (*r)->open(files[0]);
  auto slave = (*r)->open(files[1]);
  auto second = (*r)->open(files[2]);
  ASSERT_TRUE(master && slave && second);
  unsigned now = ~0u;
  ASSERT_EQ(::ioctl(master->get(), TIOCGPTN, &now), 0);
  EXPECT_EQ(now, index);
  termios t;
  ASSERT_EQ(::tcgetattr(slave->get(), &t), 0);
  EXPECT_FALSE(t.c_lflag & (ICANON | ECHO));
  EXPECT_EQ(t.c_cc[VMIN], 3);
  winsize ws{};
  ASSERT_EQ(::ioctl(second->get(), TIOCGWINSZ, &ws), 0);
  EXPECT_EQ(ws.ws_row, 50);
  EXPECT_EQ(ws.ws_col, 132);
  int pkt = 0;
  ASSERT_EQ(::ioctl(master->get(), TIOCGPKT, &pkt), 0);
  EXPECT_EQ(pkt, 1);
  // Two slave descriptions, each with its own flags.
  EXPECT_TRUE(::fcntl(slave->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(::fcntl(second->get(), F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
  // Connected: the slave's bytes come out of the master (packet mode: a
  // zero status byte first).
  ASSERT_EQ(::write(slave->get(), "hi", 2), 2);
  char buf[8] = {};
  EXPECT_EQ(::read(master->get(), buf, sizeof buf), 3);
  EXPECT_EQ(std::string(buf + 1, 2), "hi");
}

TEST(Tty, AnIndexInUseGivesAnotherWithAWarning) {
  TtyStore store;
  OwnPty p = open_pty();  // stays open: its index is taken at "restore"
  auto e = dump_end(p.master.get(), 1, store);
  ASSERT_TRUE(e) << e.error().what();
  std::vector<std::string> warnings;
  LogOptions lo;
  lo.level = LogLevel::warn;
  lo.sink = [&](LogLevel, std::string_view line) { warnings.emplace_back(line); };
  Logger log(lo);
  auto r = TtyRestorer::create_all({*e}, 100, log);
  ASSERT_TRUE(r) << r.error().what();
  auto master = (*r)->open(*e);
  ASSERT_TRUE(master);
  unsigned now = 0;
  ASSERT_EQ(::ioctl(master->get(), TIOCGPTN, &now), 0);
  EXPECT_NE(now, p.index);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(fmt::format("/dev/pts/{} is in use here", p.index)), std::string::npos)
      << warnings[0];
}
