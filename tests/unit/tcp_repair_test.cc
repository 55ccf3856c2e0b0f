// TCP_REPAIR on a real loopback connection (needs CAP_NET_ADMIN): both ends
// read in repair mode, closed silently, made again on new sockets, and every
// byte in flight arrives once, in order. One variant restores the whole send
// queue as already sent (in repair mode), so that the kernel must retransmit
// it: the path a connection with unacknowledged data takes.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "base/unique_fd.hpp"
#include "net/inet_addr.hpp"
#include "net/tcp_repair.hpp"

using namespace minicriu;

namespace {

uint8_t pattern(size_t i, int dir) { return static_cast<uint8_t>((i * 131 + i / 977 + dir * 17) & 0xff); }

std::string bytes(size_t from, size_t n, int dir) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>(pattern(from + i, dir));
  return s;
}

InetEndpoint inet_name_of(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (peer) ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  else ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return endpoint_from_sockaddr(ss);
}

// Sends without blocking until the kernel takes no more.
size_t fill(int fd, int dir, size_t limit) {
  size_t sent = 0;
  while (sent < limit) {
    std::string chunk = bytes(sent, std::min<size_t>(16384, limit - sent), dir);
    ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

// Reads exactly n bytes within timeout_ms; "" on failure.
std::string read_n(int fd, size_t n, int timeout_ms) {
  std::string out;
  std::string buf(65536, '\0');
  for (int waited = 0; out.size() < n && waited < timeout_ms;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) == 0) {
      waited += 50;
      continue;
    }
    ssize_t r = ::recv(fd, buf.data(), std::min(buf.size(), n - out.size()), MSG_DONTWAIT);
    if (r <= 0) return out;
    out.append(buf.data(), static_cast<size_t>(r));
  }
  return out;
}

int state_of(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  ::getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &len);
  return ti.tcpi_state;
}

UniqueFd remake(const InetEndpoint& local, const InetEndpoint& remote, const img::TcpConnection& c,
                const TcpRestorePlan& plan) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(tcp_repair_on(fd.get(), "test"));
  sockaddr_storage ss;
  socklen_t len = endpoint_to_sockaddr(local, AF_INET, ss);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len), 0) << strerror(errno);
  auto st = restore_tcp_connection(fd.get(), AF_INET, remote, c, plan, "test");
  EXPECT_TRUE(st) << (st ? "" : st.error().what());
  return fd;
}

// all_as_sent: the whole send queue comes back as sent (retransmitted).
// fin: the client had shut down its side after its data (FIN_WAIT1 or 2),
// so the server sees the end of the stream after the last byte.
// peer_resends: the server takes the client's FIN again (both restored), or
// keeps it counted and shows the end of the stream with SHUT_RD (a peer
// outside the tree, which will not send it again).
void round_trip(bool all_as_sent, bool fin = false, size_t client_data = 8 << 20, bool peer_resends = true) {
  if (::geteuid() != 0) GTEST_SKIP() << "TCP_REPAIR needs CAP_NET_ADMIN";
  UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ASSERT_EQ(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l.get(), 1), 0);
  ASSERT_EQ(::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &alen), 0);
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  UniqueFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(s);
  // The client sends until both its queue and the server's are full; the
  // server sends a little, which waits in the client's receive queue.
  size_t c_sent = fill(c.get(), 0, client_data);
  size_t s_sent = fill(s.get(), 1, 30000);
  ASSERT_GT(c_sent, 0u);
  ASSERT_EQ(s_sent, 30000u);
  if (fin) {
    ASSERT_EQ(::shutdown(c.get(), SHUT_WR), 0);
  }
  ::usleep(50 * 1000);
  int c_state = state_of(c.get()), s_state = state_of(s.get());
  if (fin) {
    EXPECT_TRUE(tcp_fin_sent(c_state)) << c_state;
    EXPECT_TRUE(tcp_connected_state(s_state)) << s_state;
    // All taken by the server: FIN_WAIT2 and CLOSE_WAIT.
    if (client_data <= (1 << 20)) {
      EXPECT_EQ(std::pair(c_state, s_state), std::pair(5, 8));
    }
  }

  InetEndpoint cl = inet_name_of(c.get(), false), sl = inet_name_of(s.get(), false);
  uint32_t sc_shutdown = tcp_fin_received(s_state) ? 1 : 0;  // sock_diag's, as the dump reads it
  img::TcpConnection cc, sc;
  ASSERT_TRUE(tcp_repair_on(c.get(), "client"));
  ASSERT_TRUE(tcp_repair_on(s.get(), "server"));
  auto st = dump_tcp_connection(c.get(), c_state, "client", cc);
  ASSERT_TRUE(st) << st.error().what();
  st = dump_tcp_connection(s.get(), s_state, "server", sc);
  ASSERT_TRUE(st) << st.error().what();
  // A large stream fills the server's window: the client keeps the rest.
  if (client_data > (1 << 20)) {
    EXPECT_FALSE(cc.send_queue().empty());
  }
  EXPECT_FALSE(sc.recv_queue().empty());
  EXPECT_EQ(cc.recv_queue().size(), 30000u);
  EXPECT_EQ(sc.recv_queue().size() + cc.send_queue().size(), c_sent);
  EXPECT_EQ(sc.recv_queue(), bytes(0, sc.recv_queue().size(), 0));
  EXPECT_EQ(cc.send_queue(), bytes(sc.recv_queue().size(), cc.send_queue().size(), 0));
  // In repair mode they close without a word to each other.
  c.reset();
  s.reset();
  if (all_as_sent) cc.set_unsent(0);

  TcpRestorePlan cplan{c_state, tcp_fin_sent(s_state), 0};
  TcpRestorePlan splan{s_state, peer_resends && tcp_fin_sent(c_state), sc_shutdown};
  UniqueFd s2 = remake(sl, cl, sc, splan);
  UniqueFd c2 = remake(cl, sl, cc, cplan);
  st = resume_tcp_connection(s2.get(), false, sc, splan, "server");
  ASSERT_TRUE(st) << st.error().what();
  st = resume_tcp_connection(c2.get(), false, cc, cplan, "client");
  ASSERT_TRUE(st) << st.error().what();
  EXPECT_EQ(inet_name_of(c2.get(), true), sl);
  std::string got = read_n(s2.get(), c_sent, 15000);
  EXPECT_EQ(got.size(), c_sent);
  EXPECT_TRUE(got == bytes(0, c_sent, 0)) << "the client's stream differs";
  EXPECT_EQ(read_n(c2.get(), 30000, 5000), bytes(0, 30000, 1));
  if (fin) {
    // The end of the client's stream, once, and the server may still talk.
    pollfd p{s2.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    char b;
    EXPECT_EQ(::recv(s2.get(), &b, 1, MSG_DONTWAIT), 0);
    if (peer_resends) {
      EXPECT_EQ(state_of(s2.get()), 8) << "CLOSE_WAIT";
    }
    ASSERT_EQ(::send(s2.get(), "bye", 3, MSG_NOSIGNAL), 3);
    EXPECT_EQ(read_n(c2.get(), 3, 5000), "bye");
    return;
  }
  // And the connection goes on.
  ASSERT_EQ(::send(c2.get(), "more", 4, MSG_NOSIGNAL), 4);
  EXPECT_EQ(read_n(s2.get(), 4, 5000), "more");
}

}  // namespace

TEST(TcpRepair, BothQueuesComeBackWithTheUnsentPartSentAfterRepair) { round_trip(false); }
TEST(TcpRepair, DataRestoredAsSentIsRetransmitted) { round_trip(true); }
// FIN_WAIT1: the FIN waits behind unsent data; the server is ESTABLISHED.
TEST(TcpRepair, AFinBehindUnsentDataComesAfterIt) { round_trip(false, true); }
// FIN_WAIT2 / CLOSE_WAIT: every byte and the FIN were taken; the server had
// not read them all.
TEST(TcpRepair, AHalfClosedConnectionComesBackHalfClosed) { round_trip(false, true, 20000); }
TEST(TcpRepair, AFinNotSentAgainIsShownAsTheEndOfTheStream) { round_trip(false, true, 20000, false); }

// A pending connection's client: what the accepted end already received is
// not sent again from the client's send queue (its ACK may have been lost).
TEST(TcpRepair, BytesTheReceiverHasAreDroppedFromTheSendQueue) {
  auto conn = [](uint32_t send_seq, std::string queue, uint32_t unsent) {
    img::TcpConnection c;
    c.set_send_seq(send_seq);
    c.set_send_queue(std::move(queue));
    c.set_unsent(unsent);
    return c;
  };
  // Queue "abcdef" holds sequence numbers 94..99; the receiver has up to 96.
  auto c = conn(100, "abcdef", 0);
  drop_received_from_send_queue(c, 97);
  EXPECT_EQ(c.send_queue(), "def");
  // Nothing received of it, or an unrelated number: unchanged.
  c = conn(100, "abcdef", 0);
  drop_received_from_send_queue(c, 94);
  EXPECT_EQ(c.send_queue(), "abcdef");
  drop_received_from_send_queue(c, 5000);
  EXPECT_EQ(c.send_queue(), "abcdef");
  // Never past what was sent: the unsent tail stays.
  c = conn(100, "abcdef", 2);
  drop_received_from_send_queue(c, 100);
  EXPECT_EQ(c.send_queue(), "abcdef");
  drop_received_from_send_queue(c, 98);
  EXPECT_EQ(c.send_queue(), "ef");
  // Across the wrap of sequence numbers.
  c = conn(2, "abcdef", 0);  // 0xfffffffc..1
  drop_received_from_send_queue(c, 0);
  EXPECT_EQ(c.send_queue(), "ef");
}
