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

uint64_t ino_of(int fd) {
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
    auto st = dump_unix_socket(fmt::format("test: fd {}", p.fd[i]), p.fd[i], ino_of(p.fd[i]),
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

TEST(UnixSocket, FdsInFlightAreRefusedAndLeftQueued) {
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
  close(passed);
  img::UnixSocketFile out;
  auto st = dump_unix_socket("pid 1: fd 4", p.fd[1], ino_of(p.fd[1]), 0, out);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("carries fds"), std::string::npos) << st.error().what();
  EXPECT_EQ(drain(p.fd[1]), std::vector<std::string>{"x"});
}

TEST(UnixSocket, PeerOutsideTheTreeIsNamed) {
  Pair p(SOCK_STREAM);
  img::UnixSocketFile out;
  ASSERT_TRUE(dump_unix_socket("pid 1: fd 3", p.fd[0], ino_of(p.fd[0]), 0, out));
  UnixSocketStore store;
  store.add(out, "pid 1: fd 3");
  auto st = store.check_peers({});
  ASSERT_FALSE(st);
  std::string expect = fmt::format("pid 1: fd 3: unix stream socket:[{}] is connected to socket:[{}] held "
                                   "by pid {} (", ino_of(p.fd[0]), ino_of(p.fd[1]), getpid());
  EXPECT_EQ(st.error().what().rfind(expect, 0), 0u) << st.error().what();
  EXPECT_EQ(st.error().what().find('\n'), std::string::npos);
  img::UnixSocketFile other;
  ASSERT_TRUE(dump_unix_socket("pid 1: fd 4", p.fd[1], ino_of(p.fd[1]), 0, other));
  store.add(other, "pid 1: fd 4");
  EXPECT_TRUE(store.check_peers({}));
}

}  // namespace
