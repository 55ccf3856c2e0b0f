// TCP and UDP sockets at dump and restore: a stream between two processes of
// the tree with data in every queue, IPv6 and v4-mapped, UDP pairs, a
// connection waiting to be accepted, and the refusals: a peer outside the
// tree, a pending connection from outside, queued datagrams, raw sockets.
#include <gtest/gtest.h>
#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "net/network_lock.hpp"
#include "minicriu.pb.h"

using namespace e2e;

namespace {

// A TCP listener on 127.0.0.1 at a port the kernel picks (in a).
int loopback_listener(sockaddr_in& a, int backlog) {
  int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  a = sockaddr_in{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(l, backlog), 0);
  EXPECT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
  return l;
}

// A connected loopback pair: {client, accepted server end}; the listener is
// returned in *listener if asked for, else closed.
std::pair<int, int> loopback_connection(int* listener = nullptr) {
  sockaddr_in a;
  int l = loopback_listener(a, 1);
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  int s = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_GE(s, 0);
  if (listener) *listener = l;
  else ::close(l);
  return {c, s};
}

// Queue sizes of the established TCP connections of an image.
struct Queues {
  size_t connections = 0;
  size_t with_send = 0;  // connections whose send queue held data
  size_t with_recv = 0;
};

Queues queues_of(const std::string& images) {
  Queues q;
  auto view = show_json(images);
  for (auto& f : view.files()) {
    if (!f.has_inet_sk() || !f.inet_sk().has_tcp()) continue;
    q.connections++;
    q.with_send += !f.inet_sk().tcp().send_queue().empty();
    q.with_recv += !f.inet_sk().tcp().recv_queue().empty();
  }
  return q;
}

// A free TCP port on 127.0.0.1 (free when asked).
int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

}  // namespace

TEST(InetSocketRestore, StreamContinuesGapFreeWithDataInEveryQueue) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tcpstream", dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  RestoredTree restored;
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  // Both ends were dumped mid-stream, each with bytes to send and to read.
  Queues q = queues_of(images);
  EXPECT_EQ(q.connections, 2u);
  EXPECT_EQ(q.with_send, 2u);
  EXPECT_EQ(q.with_recv, 2u);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("tcp 127.0.0.1:"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find(" LISTEN socket:["), std::string::npos) << text.output;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "tcpstream.log");
}

// Left running, the connections were taken out of repair mode; the image,
// read while both ends were frozen, still makes a consistent pair once the
// original tree is gone.
TEST(InetSocketRestore, ALeaveRunningImageRestoresOnceTheOriginalIsGone) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tcpstream", dir, {"pair", "v6"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  RestoredTree restored;
  restored.add_from(images);
  auto view = show_json(images);
  for (auto& proc : view.processes()) ::kill(static_cast<pid_t>(proc.pstree().pid()), SIGKILL);
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  for (auto& proc : view.processes()) {
    wait_pid(static_cast<pid_t>(proc.pstree().pid()), 5000);
    ASSERT_TRUE(wait_gone(static_cast<pid_t>(proc.pstree().pid())));
  }
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "tcpstream.log");
}

TEST(InetSocketRestore, StreamSurvivesTwoCycles) { cycle("tcpstream", 2, {"pair", "v4"}); }
TEST(InetSocketRestore, Ipv6Stream) { cycle("tcpstream", 1, {"pair", "v6"}); }
TEST(InetSocketRestore, V4MappedStreamOnAnIpv6Listener) { cycle("tcpstream", 1, {"pair", "mapped"}); }
TEST(InetSocketRestore, UdpPairsBoundAndConnected) { cycle("udp", 2); }
// FIN_WAIT2 and CLOSE_WAIT, with the bytes before the FIN unread.
TEST(InetSocketRestore, AHalfClosedConnectionComesBackHalfClosed) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tcphalf", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  RestoredTree restored;
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  std::multiset<uint32_t> states;
  auto view = show_json(images);
  for (auto& f : view.files())
    if (f.has_inet_sk() && f.inet_sk().has_tcp()) states.insert(f.inet_sk().state());
  EXPECT_EQ(states, (std::multiset<uint32_t>{5, 8}));  // FIN_WAIT2, CLOSE_WAIT
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "tcphalf.log");
}
TEST(InetSocketRestore, AHalfClosedConnectionSurvivesTwoCycles) { cycle("tcphalf", 2); }

TEST(InetSocketRestore, PendingConnectionIsAcceptedWithItsData) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tcppending", dir, {"tree"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  RestoredTree restored;
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  size_t pending = 0;
  auto view = show_json(images);
  for (auto& f : view.files())
    if (f.has_inet_sk() && f.inet_sk().pending()) {
      pending++;
      EXPECT_EQ(f.inet_sk().pending_received().size(), 5000u);
    }
  EXPECT_EQ(pending, 1u);
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "tcppending.log");
}

TEST(InetSocketRestore, PendingConnectionShutDownByItsClient) { cycle("tcppending", 1, {"tree-fin"}); }

TEST(InetSocketRestore, PendingConnectionProgramWithoutCheckpoint) {
  TempDir dir;
  Program p("tcppending", dir, {"tree"});
  ASSERT_TRUE(p.wait_ready());
  expect_intact(p);
}

TEST(InetSocketDump, PendingConnectionIsRefusedByALeaveRunningDump) {
  TempDir dir;
  Program p("tcppending", dir, {"tree"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir), "--leave-running"});
  expect_one_line_error(r, "waits to be accepted, and a --leave-running dump cannot carry it");
  EXPECT_NE(r.output.find("accept it in the application first"), std::string::npos) << r.output;
  expect_intact(p);
}

TEST(InetSocketDump, PeerOutsideTheTreeIsRefusedAndBothKeepStreaming) {
  TempDir dir;
  int port = free_port();
  Program server("tcpstream", dir, {"server", std::to_string(port)});
  TempDir cdir;
  Program client("tcpstream", cdir, {"client", std::to_string(port)});
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_TRUE(client.wait_ready()) << client.log();
  auto r = run_minicriu({"dump", "-t", std::to_string(server.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, fmt::format("tcp 127.0.0.1:{} -> 127.0.0.1:", port));
  EXPECT_NE(r.output.find("is outside the dumped tree; dump with --tcp-established"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  // --tcp-established accepts it (left running: without a network lock the
  // peer would see the dead socket answer with a reset).
  auto ok = run_minicriu({"dump", "-t", std::to_string(server.pid()), "-D", images_dir(dir, "images2"),
                          "--leave-running", "--tcp-established"});
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(queues_of(dir / "images2").connections, 1u);
  // Both still stream to the end, every byte checked.
  ASSERT_TRUE(server.alive() && client.alive());
  server.signal(SIGUSR1);
  client.signal(SIGUSR1);
  EXPECT_EQ(server.wait_exit().value_or(-1), 0) << server.log();
  EXPECT_EQ(client.wait_exit().value_or(-1), 0) << client.log();
}

// --tcp-established with the tree killed and restored: the peer (this test)
// keeps its end; the restored socket has the bytes it had not read, and the
// connection goes on both ways. Without a network lock this holds only while
// no packet crosses between the dump and the restore: the connection is quiet
// (nothing unacknowledged, windows open).
TEST(InetSocketRestore, AConnectionToAPeerOutsideComesBackWithTcpEstablished) {
  TempDir dir;
  std::string images = images_dir(dir);
  auto [theirs, ours] = loopback_connection();
  ASSERT_GE(ours, 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(theirs, 0);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  RestoredTree started;  // killed if a check below fails
  started.add(pid);
  ::close(theirs);
  ASSERT_EQ(::send(ours, "hello", 5, 0), 5);
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  ::usleep(100 * 1000);  // "hello" acknowledged: nothing in flight
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images, "--tcp-established"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(wait_pid(pid).value_or(-1), 128 + SIGKILL);
  // Killed, its peer still here: the network lock stays until the restore,
  // so what the peer sends now meets no RST and is not lost.
  std::string table = show_json(images).inventory().network_lock_table();
  ASSERT_NE(table, "");
  auto tables = minicriu::network_lock_tables();
  ASSERT_TRUE(tables) << tables.error().what();
  EXPECT_NE(std::find(tables->begin(), tables->end(), table), tables->end()) << table;
  // Only the kept one: the dump's own table went once the tree was killed.
  EXPECT_EQ(std::count_if(tables->begin(), tables->end(), [](auto& t) { return t.starts_with("minicriu-"); }), 1);
  ASSERT_EQ(::send(ours, "world", 5, 0), 5);
  ::usleep(300 * 1000);  // retransmitted at least once into the lock
  int err = 0;
  socklen_t errlen = sizeof err;
  ASSERT_EQ(::getsockopt(ours, SOL_SOCKET, SO_ERROR, &err, &errlen), 0);
  EXPECT_EQ(err, 0) << std::strerror(err);
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  // The restore removed the lock.
  tables = minicriu::network_lock_tables();
  ASSERT_TRUE(tables) << tables.error().what();
  for (auto& t : *tables) EXPECT_FALSE(t.starts_with("minicriu-")) << t;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ASSERT_GE(pidfd, 0);
  int copy = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, 0, 0));
  ASSERT_GE(copy, 0);
  char buf[16] = {};
  for (int i = 0; i < 200 && ::recv(copy, buf, sizeof buf - 1, MSG_PEEK | MSG_DONTWAIT) < 10; i++) ::usleep(10000);
  EXPECT_EQ(::recv(copy, buf, sizeof buf - 1, MSG_DONTWAIT), 10);
  EXPECT_EQ(std::string(buf), "helloworld");
  ASSERT_EQ(::send(copy, "back", 4, MSG_NOSIGNAL), 4);
  char back[8] = {};
  pollfd p{ours, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_EQ(::recv(ours, back, sizeof back - 1, 0), 4);
  EXPECT_EQ(std::string(back), "back");
  ::close(copy);
  ::close(pidfd);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
  ::close(ours);
}

TEST(InetSocketDump, PendingConnectionFromOutsideIsRefusedOrDropped) {
  TempDir dir;
  Program p("tcppending", dir, {"alone"});
  ASSERT_TRUE(p.wait_ready());
  int port = std::stoi(read_text(dir / "port"));
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::send(c, "outside", 7, 0), 7);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, fmt::format("tcp 127.0.0.1:{} LISTEN: a connection from 127.0.0.1:", port));
  EXPECT_NE(r.output.find("dump with --tcp-drop-pending to drop it"), std::string::npos) << r.output;
  // With the option (left running, so nothing is taken from the queue).
  auto ok = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir, "images2"),
                          "--leave-running", "--tcp-drop-pending"});
  EXPECT_EQ(ok.status, 0) << ok.output;
  // The connection still waits there: the program accepts it and reads it.
  expect_intact(p);
  ::close(c);
}

namespace {

// Runs `basic` with fd 0 = sock and expects the dump to refuse it.
void expect_refused_as_fd0(int sock, const std::string& needle) {
  TempDir dir;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(sock, 0);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", dir.path()});
  expect_one_line_error(r, fmt::format("pid {}: fd 0: ", pid));
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  ASSERT_TRUE(pid_exists(pid));
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
}

}  // namespace

TEST(InetSocketDump, QueuedDatagramsAreRecordedWithTheirSenders) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("udp", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  std::multiset<size_t> queued;
  auto view = show_json(images);
  for (auto& f : view.files())
    if (f.has_inet_sk() && f.inet_sk().queue_size() > 0) queued.insert(f.inet_sk().queue_size());
  EXPECT_EQ(queued, (std::multiset<size_t>{3, 2}));
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("3 datagram(s) of 1012 byte(s) queued"), std::string::npos) << text.output;
  expect_intact(p);  // read nothing: the program finds its datagrams
}

TEST(InetSocketDump, AnEmptyQueuedDatagramIsRefused) {
  int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(u, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ASSERT_EQ(::sendto(u, "", 0, 0, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  expect_refused_as_fd0(u, "an empty datagram is queued on it");
  ::close(u);
}

TEST(InetSocketDump, AConnectionClosedByBothEndsIsRefused) {
  int l = -1;
  auto [c, s] = loopback_connection(&l);
  ASSERT_GE(s, 0);
  ::shutdown(c, SHUT_WR);
  ::shutdown(s, SHUT_WR);  // both FINs acknowledged: s is CLOSE, still naming the listener's port
  ::usleep(50 * 1000);
  expect_refused_as_fd0(s, "a TCP connection that has closed (reset, or shut down by both ends)");
  ::close(s);
  ::close(c);
  ::close(l);
}

// Raw sockets are carried now (src/net/raw_socket.cc); MPTCP is not.
TEST(InetSocketDump, MptcpSocketsAreRefused) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 262 /* IPPROTO_MPTCP */);
  if (s < 0) GTEST_SKIP() << "no MPTCP in this kernel";
  expect_refused_as_fd0(s, "is an MPTCP socket (AF_INET), which minicriu cannot checkpoint");
  ::close(s);
}

TEST(InetSocketRestore, OptionsTimeoutsDevicesAndClassicFiltersComeBackTwice) { cycle("sockopts", 2); }

// A connect still in SYN_SENT comes back connecting again to the same peer.
TEST(InetSocketRestore, AConnectionStillConnectingConnectsAgainTwice) { cycle("tcpsyn", 2); }

TEST(InetSocketDump, AnEbpfSocketFilterIsRefusedInOneLineAndTheTargetRunsOn) {
  TempDir dir;
  Program p("sockopts", dir, {"ebpf"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, "has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back");
  EXPECT_NE(r.output.find(fmt::format("pid {}: fd ", p.pid())), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  expect_intact(p);
}
