// A listener comes back on its port although connections in TIME_WAIT still
// hold that port: an application that did not set SO_REUSEADDR (Open MPI's
// TCP BTL) leaves such connections behind, closed ones of its own past or
// of a job that ran before on the same port range, and nothing but ending
// them early lets the port be bound again.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

// One connection accepted on 127.0.0.1:port and closed by the accepting side
// first: it stays in TIME_WAIT on that port, without SO_REUSEADDR.
bool leave_time_wait_on(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = ::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(l, 1) == 0 &&
            ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  int s = ok ? ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  if (s >= 0) ::close(s);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::close(c);
  ::close(l);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // Now nothing but TIME_WAIT holds the port: a plain bind fails.
  int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool held = ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == EADDRINUSE;
  ::close(probe);
  return ok && s >= 0 && held;
}

}  // namespace

TEST(InetSocketRestore, AListenerComesBackOnAPortHeldByTimeWaitConnections) {
  TempDir dir;
  Program p("tcpstream", dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(p.pid(), images, &p));
  uint16_t port = 0;
  auto view = show_json(images);
  for (auto& f : view.files())
    if (f.has_inet_sk() && f.inet_sk().state() == 10) port = static_cast<uint16_t>(f.inet_sk().local_port());
  ASSERT_NE(port, 0);
  ASSERT_TRUE(leave_time_wait_on(port));
  RestoredTree tree;
  tree.add_from(images);
  pid_t pid = restore_detached(images);
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid, 60000).value_or(-1), 0) << read_text(dir / "tcpstream.log");
}
