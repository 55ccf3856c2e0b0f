// The dumper takes only its parasite on its abstract socket: a process of
// the same network namespace that finds the name (/proc/net/unix) and
// connects first is refused (SO_PEERCRED: its pid is not the target's), gets
// nothing, and the dump goes on with the real parasite.
//
// The race is won for the impostor by MINICRIU_FAULT=parasite-listen:1:delay=MS
// (base/fault.hpp): the dumper waits between making its listener and
// starting the parasite.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <sstream>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;
using Clock = std::chrono::steady_clock;

namespace {

// The abstract name the dumper listens on for the target's parasite ("" if
// none yet).
std::string parasite_socket_name(pid_t target) {
  std::istringstream in(read_text("/proc/net/unix"));
  std::string line, want = "-" + std::to_string(target) + "-";
  while (std::getline(in, line)) {
    auto at = line.find("@minicriu-parasite-");
    if (at == std::string::npos) continue;
    std::string name = line.substr(at + 1);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    // minicriu-parasite-DUMPER-TARGET-STAMP
    auto rest = name.substr(std::strlen("minicriu-parasite-"));
    auto dash = rest.find('-');
    if (dash != std::string::npos && rest.substr(dash).starts_with(want)) return name;
  }
  return "";
}

}  // namespace

TEST(ParasitePeer, AConnectionFromAnotherProcessIsRefusedAndTheDumpGoesOn) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("intact", dir);
  ASSERT_TRUE(p.wait_ready());
  auto dump = std::async(std::launch::async, [&] {
    return run({"/usr/bin/env", "MINICRIU_FAULT=parasite-listen:1:delay=1500", minicriu_bin(), "dump", "-t",
                std::to_string(p.pid()), "-D", images, "-R"});
  });
  std::string name;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while ((name = parasite_socket_name(p.pid())).empty() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_FALSE(name.empty()) << "no parasite socket appeared";

  // The impostor: this test, connecting before the parasite can.
  int sk = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(sk, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(::connect(sk, reinterpret_cast<sockaddr*>(&addr), len), 0) << std::strerror(errno);

  auto r = dump.get();
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("a connection to the parasite's socket from pid " + std::to_string(::getpid()) +
                          " (uid 0), not the target, was refused"),
            std::string::npos)
      << r.output;
  // It got nothing but the end of its connection.
  char buf[64];
  pollfd pfd{sk, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 1000), 1);
  EXPECT_EQ(::recv(sk, buf, sizeof(buf), MSG_DONTWAIT), 0);
  ::close(sk);
  EXPECT_TRUE(std::filesystem::exists(images + "/inventory.img"));
  expect_intact(p);
}
