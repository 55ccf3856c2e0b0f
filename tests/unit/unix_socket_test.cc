// Unix socket pairs dumped and restored in-process on real sockets: queues in
// both directions come back in order with their boundaries, and the dump
// leaves the application's queues (and its SO_PEEK_OFF) as they were.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "kinds/kind.hpp"
#include "net/unix_socket.hpp"

using namespace minicriu;

namespace {

struct Pair {
  int fd[2] = {-1, -1};
  explicit Pair(int type) { EXPECT_EQ(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fd), 0); }
  ~Pair() {
    close(fd[0]);
    close(fd[1]);
  }
};

uint64_t sock_ino_of(int fd) {
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

void send_all(int fd, const std::vector<std::string>& msgs) {
  for (auto& m : msgs) ASSERT_EQ(send(fd, m.data(), m.size(), 0), (ssize_t)m.size());
}

// Every message still queued on fd, consumed (boundaries kept for datagram kinds).
std::vector<std::string> drain(int fd) {
  std::vector<std::string> out;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    out.emplace_back(buf, n);
  }
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (auto& m : v) s += m;
  return s;
}

// Dumps both sockets of a pair into FileEntries.
std::vector<img::FileEntry> dump_pair(const Pair& p) {
  std::vector<img::FileEntry> files(2);
  for (int i = 0; i < 2; i++) {
    files[i].set_id(i + 1);
    auto st = dump_unix_socket(fmt::format("test: fd {}", p.fd[i]), p.fd[i], sock_ino_of(p.fd[i]),
                               fcntl(p.fd[i], F_GETFL), *files[i].mutable_unix_sk());
    EXPECT_TRUE(st) << (st ? "" : st.error().what());
  }
  return files;
}

class UnixPair : public ::testing::TestWithParam<int> {};

TEST_P(UnixPair, QueuesBothWaysRoundTripAndStayQueued) {
  int type = GetParam();
  Pair p(type);
  std::vector<std::string> to_b = {"first", "second message", "3"};
  std::vector<std::string> to_a = {"reply one", "reply two"};
  send_all(p.fd[0], to_b);
  send_all(p.fd[1], to_a);
  auto files = dump_pair(p);
  const auto& a = files[0].unix_sk();
  const auto& b = files[1].unix_sk();
  EXPECT_EQ(a.peer_ino(), b.ino());
  EXPECT_EQ(b.peer_ino(), a.ino());
  EXPECT_EQ(a.type(), (uint32_t)type);
  EXPECT_EQ(a.peek_off(), -1);
  std::vector<std::string> a_queue(a.queue().begin(), a.queue().end());
  std::vector<std::string> b_queue(b.queue().begin(), b.queue().end());
  if (type == SOCK_STREAM) {
    EXPECT_EQ(a_queue, std::vector<std::string>{joined(to_a)});
    EXPECT_EQ(b_queue, std::vector<std::string>{joined(to_b)});
  } else {
    EXPECT_EQ(a_queue, to_a);
    EXPECT_EQ(b_queue, to_b);
  }

  auto restorer = UnixSocketRestorer::create_all(files, 100);
  ASSERT_TRUE(restorer) << restorer.error().what();
  auto ra = (*restorer)->open(a);
  auto rb = (*restorer)->open(b);
  ASSERT_TRUE(ra && rb);
  restorer->reset();  // the dups alone hold the sockets now

  // The application's sockets were not touched: same queues, same peek offset.
  int off = 0;
  socklen_t len = sizeof off;
  ASSERT_EQ(getsockopt(p.fd[1], SOL_SOCKET, SO_PEEK_OFF, &off, &len), 0);
  EXPECT_EQ(off, -1);
  auto orig_b = drain(p.fd[1]), orig_a = drain(p.fd[0]);
  auto new_b = drain(rb->get()), new_a = drain(ra->get());
  if (type == SOCK_STREAM) {
    EXPECT_EQ(joined(orig_b), joined(to_b));
    EXPECT_EQ(joined(orig_a), joined(to_a));
    EXPECT_EQ(joined(new_b), joined(to_b));
    EXPECT_EQ(joined(new_a), joined(to_a));
  } else {
    EXPECT_EQ(orig_b, to_b);
    EXPECT_EQ(orig_a, to_a);
    EXPECT_EQ(new_b, to_b);
    EXPECT_EQ(new_a, to_a);
  }
  // And the restored pair still works both ways.
  send_all(ra->get(), {"ping"});
  send_all(rb->get(), {"pong"});
  EXPECT_EQ(drain(rb->get()), std::vector<std::string>{"ping"});
  EXPECT_EQ(drain(ra->get()), std::vector<std::string>{"pong"});
}

INSTANTIATE_TEST_SUITE_P(Types, UnixPair, ::testing::Values(SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM),
                         [](const auto& info) { return unix_type_name(info.param); });

TEST(UnixSocket, PeekOffsetOfTheApplicationIsKeptAndRestored) {
  Pair p(SOCK_DGRAM);
  send_all(p.fd[0], {"aa", "bbb", "cccc"});
  int off = 2;
  ASSERT_EQ(setsockopt(p.fd[1], SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off), 0);
  auto files = dump_pair(p);
  EXPECT_EQ(files[1].unix_sk().queue_size(), 3);
  EXPECT_EQ(files[1].unix_sk().peek_off(), 2);
  socklen_t len = sizeof off;
  ASSERT_EQ(getsockopt(p.fd[1], SOL_SOCKET, SO_PEEK_OFF, &off, &len), 0);
  EXPECT_EQ(off, 2);
  auto restorer = UnixSocketRestorer::create_all(files, 100);
  ASSERT_TRUE(restorer);
  auto rb = (*restorer)->open(files[1].unix_sk());
  ASSERT_TRUE(rb);
  ASSERT_EQ(getsockopt(rb->get(), SOL_SOCKET, SO_PEEK_OFF, &off, &len), 0);
  EXPECT_EQ(off, 2);
  EXPECT_EQ(drain(p.fd[1]), (std::vector<std::string>{"aa", "bbb", "cccc"}));
}

TEST(UnixSocket, ShutdownAndNonBlockingComeBack) {
  Pair p(SOCK_STREAM);
  send_all(p.fd[0], {"last words"});
  ASSERT_EQ(shutdown(p.fd[0], SHUT_WR), 0);
  ASSERT_EQ(fcntl(p.fd[1], F_SETFL, O_NONBLOCK), 0);
  auto files = dump_pair(p);
  EXPECT_EQ(files[0].unix_sk().shutdown(), 2u);  // SEND_SHUTDOWN
  EXPECT_EQ(files[1].unix_sk().shutdown(), 1u);  // RCV_SHUTDOWN
  auto restorer = UnixSocketRestorer::create_all(files, 100);
  ASSERT_TRUE(restorer) << restorer.error().what();
  auto rb = (*restorer)->open(files[1].unix_sk());
  ASSERT_TRUE(rb);
  restorer->reset();
  EXPECT_TRUE(fcntl(rb->get(), F_GETFL) & O_NONBLOCK);
  char buf[64];
  EXPECT_EQ(recv(rb->get(), buf, sizeof buf, 0), 10);
  EXPECT_EQ(recv(rb->get(), buf, sizeof buf, 0), 0);  // EOF after the queued bytes
}

TEST(UnixSocket, AQueueUnderARaisedSendBufferFitsAgain) {
  Pair p(SOCK_STREAM);
  int big = 1 << 20;
  ASSERT_EQ(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big), 0);
  // More than a default send buffer (net.core.wmem_default) lets queue.
  std::string data(600000, 'q');
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<char>(i * 7);
  ASSERT_EQ(send(p.fd[0], data.data(), data.size(), MSG_DONTWAIT), (ssize_t)data.size());
  auto files = dump_pair(p);
  ASSERT_EQ(files[1].unix_sk().queue_size(), 1);
  EXPECT_EQ(files[1].unix_sk().queue(0), data);
  EXPECT_EQ(files[0].unix_sk().sndbuf(), 2u << 20);
  auto restorer = UnixSocketRestorer::create_all(files, 100);
  ASSERT_TRUE(restorer) << restorer.error().what();
  auto ra = (*restorer)->open(files[0].unix_sk());
  auto rb = (*restorer)->open(files[1].unix_sk());
  ASSERT_TRUE(ra && rb);
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  ASSERT_EQ(getsockopt(ra->get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
  EXPECT_EQ(sndbuf, 2 << 20);
  EXPECT_EQ(joined(drain(rb->get())), data);
  EXPECT_EQ(joined(drain(p.fd[1])), data);
}

TEST(UnixSocket, FdsInFlightAreCarriedAndLeftQueued) {
  Pair p(SOCK_DGRAM);
  int passed = dup(0);
  char byte = 'x';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &passed, sizeof passed);
  ASSERT_EQ(sendmsg(p.fd[0], &msg, 0), 1);
  struct stat want;
  ASSERT_EQ(fstat(passed, &want), 0);
  close(passed);
  // Without a way to add the file, refused; with one, the file in flight is
  // handed over (the same file) and the message names it.
  img::UnixSocketFile out;
  auto st = dump_unix_socket("pid 1: fd 4", p.fd[1], sock_ino_of(p.fd[1]), 0, out);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("SCM_RIGHTS"), std::string::npos) << st.error().what();
  std::vector<ino_t> seen;
  UnixAddFile add = [&](int fd, const std::string&) -> Result<uint32_t> {
    struct stat got;
    if (fstat(fd, &got) != 0) return fail_errno("fstat");
    seen.push_back(got.st_ino);
    return 7;
  };
  img::UnixSocketFile carried;
  ASSERT_TRUE(dump_unix_socket("pid 1: fd 4", p.fd[1], sock_ino_of(p.fd[1]), 0, carried, 0, add));
  ASSERT_EQ(seen, std::vector<ino_t>{want.st_ino});
  ASSERT_EQ(carried.queue_control_size(), 1);
  EXPECT_EQ(carried.queue_control(0).index(), 0u);
  EXPECT_EQ(carried.queue_control(0).file_ids_size(), 1);
  EXPECT_EQ(carried.queue_control(0).file_ids(0), 7u);
  EXPECT_EQ(drain(p.fd[1]), std::vector<std::string>{"x"});
}

FdDumpInfo fd_info(pid_t pid, int fd) {
  FdDumpInfo info;
  info.pid = pid;
  info.fd = fd;
  info.what = fmt::format("pid {}: fd {}", pid, fd);
  return info;
}

img::FileEntry socket_entry(int fd, const std::string& what) {
  img::FileEntry e;
  EXPECT_TRUE(dump_unix_socket(what, fd, sock_ino_of(fd), 0, *e.mutable_unix_sk()));
  return e;
}

TEST(UnixSocket, PeerOutsideTheTreeIsNamed) {
  Pair p(SOCK_STREAM);
  std::vector<img::FileEntry> files{socket_entry(p.fd[0], "pid 1: fd 3")};
  UnixSocketStore store;
  store.add(files[0].unix_sk(), fd_info(1, 3));
  auto st = store.check_peers({}, ExternalPolicy(), files);
  ASSERT_FALSE(st);
  std::string expect = fmt::format("pid 1: fd 3: unix stream socket:[{}] is connected to socket:[{}] held "
                                   "by pid {} (", sock_ino_of(p.fd[0]), sock_ino_of(p.fd[1]), getpid());
  EXPECT_EQ(st.error().what().rfind(expect, 0), 0u) << st.error().what();
  EXPECT_NE(st.error().what().find(fmt::format("--external unix[{}]", sock_ino_of(p.fd[0]))), std::string::npos);
  EXPECT_NE(st.error().what().find(fmt::format("--inherit-fd fd[N]:socket:[{}]", sock_ino_of(p.fd[0]))),
            std::string::npos);
  EXPECT_EQ(st.error().what().find('\n'), std::string::npos);
  files.push_back(socket_entry(p.fd[1], "pid 1: fd 4"));
  store.add(files[1].unix_sk(), fd_info(1, 4));
  EXPECT_TRUE(store.check_peers({}, ExternalPolicy(), files));
  EXPECT_FALSE(files[0].unix_sk().external());
}

ExternalPolicy policy_of(DumpOptions o) {
  auto p = ExternalPolicy::from_options(o);
  EXPECT_TRUE(p) << p.error().what();
  return *p;
}

TEST(UnixSocket, PeerOutsideAcceptedByOptionOrHook) {
  Pair p(SOCK_SEQPACKET);
  uint64_t ino = sock_ino_of(p.fd[0]);
  DumpOptions by_inode;
  by_inode.external = {fmt::format("unix[{}]", ino)};
  DumpOptions other_inode;
  other_inode.external = {fmt::format("unix[{}]", ino + 1000)};
  DumpOptions all;
  all.ext_unix_sk = true;
  DumpOptions hooked;
  std::vector<ExternalObject> asked;
  hooked.external_hook = [&](const ExternalObject& o) {
    asked.push_back(o);
    return true;
  };
  for (auto* o : {&by_inode, &all, &hooked, &other_inode}) {
    std::vector<img::FileEntry> files{socket_entry(p.fd[0], "pid 1: fd 3")};
    UnixSocketStore store;
    store.add(files[0].unix_sk(), fd_info(1, 3));
    auto st = store.check_peers({}, policy_of(*o), files);
    bool accepted = o != &other_inode;
    EXPECT_EQ(bool(st), accepted) << (st ? "" : st.error().what());
    EXPECT_EQ(files[0].unix_sk().external(), accepted);
    if (accepted) {
      EXPECT_EQ(files[0].unix_sk().peer_pid(), static_cast<uint32_t>(getpid()));
    }
  }
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].kind, "unix");
  EXPECT_EQ(asked[0].key, fmt::format("socket:[{}]", ino));
  EXPECT_EQ(asked[0].type, "seqpacket");
  EXPECT_EQ(asked[0].pid, 1);
  EXPECT_EQ(asked[0].fd, 3);
  EXPECT_EQ(asked[0].peer_inode, sock_ino_of(p.fd[1]));
  EXPECT_EQ(asked[0].peer_pid, getpid());
}

TEST(UnixSocket, ExternalWithQueuedDataIsRefused) {
  Pair p(SOCK_STREAM);
  ASSERT_EQ(write(p.fd[1], "abc", 3), 3);
  std::vector<img::FileEntry> files{socket_entry(p.fd[0], "pid 1: fd 3")};
  UnixSocketStore store;
  store.add(files[0].unix_sk(), fd_info(1, 3));
  DumpOptions all;
  all.ext_unix_sk = true;
  auto st = store.check_peers({}, policy_of(all), files);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("3 byte(s) its peer outside the tree sent are queued"), std::string::npos)
      << st.error().what();
}

TEST(UnixSocket, ExternalOptionsParse) {
  EXPECT_EQ(parse_external_unix("unix[42]").value(), 42u);
  for (auto bad : {"unix[]", "unix[x]", "tcp[1]", "unix[1", "unix[0]"})
    EXPECT_FALSE(parse_external_unix(bad)) << bad;
  auto fd = parse_inherit_fd("fd[7]:socket:[123]");
  ASSERT_TRUE(fd);
  EXPECT_EQ(fd->first, 7);
  EXPECT_EQ(fd->second, "socket:[123]");
  for (auto bad : {"fd[7]", "fd[]:socket:[1]", "7:socket:[1]", "fd[7]:pipe:[0]", "fd[7]:tcp:[1]", "fd[-1]:socket:[1]"})
    EXPECT_FALSE(parse_inherit_fd(bad)) << bad;
  RestoreOptions closed;
  closed.inherit_fds = {"fd[1000]:socket:[5]"};
  auto st = ExternalStandIns::from_options(closed);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("fd 1000 is not open"), std::string::npos) << st.error().what();
}

TEST(UnixSocket, ExternalSocketTakesTheInheritedFd) {
  Pair old(SOCK_STREAM);
  Pair fresh(SOCK_STREAM);
  std::vector<img::FileEntry> files{socket_entry(old.fd[0], "pid 1: fd 3")};
  files[0].mutable_unix_sk()->set_external(true);
  files[0].mutable_unix_sk()->set_flags(O_NONBLOCK);
  uint64_t ino = sock_ino_of(old.fd[0]);
  // Nothing given: refused, naming the socket and the option.
  auto none = UnixSocketRestorer::take_external(files, ExternalStandIns());
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().what().find(fmt::format("--inherit-fd fd[N]:socket:[{}]", ino)), std::string::npos)
      << none.error().what();
  // A typo in --inherit-fd is refused too (the restore checks every
  // --inherit-fd against the external objects before any is taken).
  RestoreOptions typo;
  typo.inherit_fds = {fmt::format("fd[{}]:socket:[{}]", fresh.fd[0], ino + 1)};
  RestoreOptions right;
  right.inherit_fds = {fmt::format("fd[{}]:socket:[{}]", fresh.fd[0], ino)};
  EXPECT_FALSE(ExternalStandIns::from_options(typo).value().check_used(UnixSocketRestorer::external_keys(files)));
  EXPECT_TRUE(ExternalStandIns::from_options(right).value().check_used(UnixSocketRestorer::external_keys(files)));
  auto taken = UnixSocketRestorer::take_external(files, ExternalStandIns::from_options(right).value());
  ASSERT_TRUE(taken) << taken.error().what();
  auto r = UnixSocketRestorer::create_all(files, 100, std::move(*taken));
  ASSERT_TRUE(r) << r.error().what();
  auto fd = (*r)->open(files[0].unix_sk());
  ASSERT_TRUE(fd);
  // The same socket as the inherited one, with the dumped flags.
  EXPECT_EQ(sock_ino_of(fd->get()), sock_ino_of(fresh.fd[0]));
  EXPECT_TRUE(fcntl(fd->get(), F_GETFL) & O_NONBLOCK);
  ASSERT_EQ(write(fd->get(), "hi", 2), 2);
  char buf[4];
  EXPECT_EQ(read(fresh.fd[1], buf, sizeof buf), 2);
}

TEST(UnixSocket, ExternalDgramConnectsToItsPeerPathAgain) {
  // A dgram socket that talked to a named peer (a log daemon's socket).
  std::string path = fmt::format("/tmp/minicriu-unit-dgram-{}", getpid());
  unlink(path.c_str());
  int server = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(server, (sockaddr*)&addr, sizeof addr), 0);
  int old = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(old, (sockaddr*)&addr, sizeof addr), 0);
  std::vector<img::FileEntry> files{socket_entry(old, "pid 1: fd 3")};
  UnixSocketStore store;
  store.add(files[0].unix_sk(), fd_info(1, 3));
  DumpOptions all;
  all.ext_unix_sk = true;
  ASSERT_TRUE(store.check_peers({}, policy_of(all), files));
  EXPECT_EQ(files[0].unix_sk().peer_name(), path);
  auto taken = UnixSocketRestorer::take_external(files, ExternalStandIns());
  ASSERT_TRUE(taken) << taken.error().what();
  auto r = UnixSocketRestorer::create_all(files, 100, std::move(*taken));
  ASSERT_TRUE(r) << r.error().what();
  auto fd = (*r)->open(files[0].unix_sk());
  ASSERT_TRUE(fd);
  EXPECT_NE(sock_ino_of(fd->get()), sock_ino_of(old));
  ASSERT_EQ(send(fd->get(), "log line", 8, 0), 8);
  char buf[16];
  EXPECT_EQ(recv(server, buf, sizeof buf, MSG_DONTWAIT), 8);
  close(old);
  close(server);
  unlink(path.c_str());
}

}  // namespace
