// The network lock on real loopback TCP connections of this test process (as
// root): while locked, data sent either way is not delivered; once the lock
// goes, TCP retransmits it and it arrives. The table is read back from the
// kernel's ruleset through libnftables.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "minicriu/minicriu.h"
#include "net/network_lock.hpp"
#include "net/network_lock_backend.hpp"

using namespace minicriu;

namespace {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// A TCP connection over loopback: client and accepted server end, connected.
struct Loopback {
  Fd client, server;
  LockedConnection conn;  // as the client's socket sees it
};

Loopback make_loopback(int family) {
  Loopback lb;
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  }
  Fd listener(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_GE(listener.fd, 0);
  EXPECT_EQ(bind(listener.fd, reinterpret_cast<sockaddr*>(&ss), len), 0) << strerror(errno);
  EXPECT_EQ(listen(listener.fd, 1), 0);
  socklen_t l = sizeof(ss);
  EXPECT_EQ(getsockname(listener.fd, reinterpret_cast<sockaddr*>(&ss), &l), 0);
  lb.client = Fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(connect(lb.client.fd, reinterpret_cast<sockaddr*>(&ss), len), 0) << strerror(errno);
  lb.server = Fd(accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_GE(lb.server.fd, 0);

  sockaddr_storage local{}, remote{};
  socklen_t ll = sizeof(local), rl = sizeof(remote);
  EXPECT_EQ(getsockname(lb.client.fd, reinterpret_cast<sockaddr*>(&local), &ll), 0);
  EXPECT_EQ(getpeername(lb.client.fd, reinterpret_cast<sockaddr*>(&remote), &rl), 0);
  lb.conn.family = family;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&local);
    auto* b = reinterpret_cast<sockaddr_in*>(&remote);
    memcpy(lb.conn.local.data(), &a->sin_addr, 4);
    memcpy(lb.conn.remote.data(), &b->sin_addr, 4);
    lb.conn.local_port = ntohs(a->sin_port);
    lb.conn.remote_port = ntohs(b->sin_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&local);
    auto* b = reinterpret_cast<sockaddr_in6*>(&remote);
    memcpy(lb.conn.local.data(), &a->sin6_addr, 16);
    memcpy(lb.conn.remote.data(), &b->sin6_addr, 16);
    lb.conn.local_port = ntohs(a->sin6_port);
    lb.conn.remote_port = ntohs(b->sin6_port);
  }
  lb.conn.what = "test connection";
  return lb;
}

// What arrives on fd within timeout_ms ("" if nothing).
std::string receive(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return "";
  char buf[256];
  ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

bool table_present(const std::string& table) {
  auto tables = network_lock_tables();
  EXPECT_TRUE(tables.has_value()) << tables.error().what();
  return tables && std::find(tables->begin(), tables->end(), table) != tables->end();
}

size_t our_table_count(const std::string& prefix) {
  auto tables = network_lock_tables();
  EXPECT_TRUE(tables.has_value());
  size_t n = 0;
  for (auto& t : *tables) n += t.starts_with(prefix);
  return n;
}

// Both directions are silent while locked, and deliver after unlock(): the
// data sent during the lock is retransmitted, nothing is lost or reset.
void expect_locked_then_delivered(Loopback& lb, const std::function<void()>& unlock) {
  ASSERT_EQ(send(lb.client.fd, "ping", 4, 0), 4);
  ASSERT_EQ(send(lb.server.fd, "pong", 4, 0), 4);
  EXPECT_EQ(receive(lb.server.fd, 700), "") << "client -> server delivered through the lock";
  EXPECT_EQ(receive(lb.client.fd, 100), "") << "server -> client delivered through the lock";
  auto t0 = std::chrono::steady_clock::now();
  unlock();
  EXPECT_EQ(receive(lb.server.fd, 8000), "ping");
  EXPECT_EQ(receive(lb.client.fd, 8000), "pong");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("delivered %lld ms after the unlock\n", static_cast<long long>(ms));
}

Logger quiet() {
  LogOptions o;
  o.level = LogLevel::warn;
  return Logger(o);
}

}  // namespace

TEST(NetworkLockMode, ParsesEveryModeAndRefusesOthers) {
  EXPECT_EQ(parse_network_lock_mode("auto").value(), NetworkLockMode::automatic);
  EXPECT_EQ(parse_network_lock_mode("nftables").value(), NetworkLockMode::nftables);
  EXPECT_EQ(parse_network_lock_mode("iptables").value(), NetworkLockMode::iptables);
  EXPECT_EQ(parse_network_lock_mode("skip").value(), NetworkLockMode::skip);
  for (const char* bad : {"", "bogus", "NFTABLES", "auto ", "nft"}) {
    auto r = parse_network_lock_mode(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_NE(r.error().what().find("expected auto, nftables, iptables or skip"), std::string::npos);
    EXPECT_EQ(r.error().what().find('\n'), std::string::npos);
  }
  for (auto m : {NetworkLockMode::automatic, NetworkLockMode::nftables, NetworkLockMode::iptables,
                 NetworkLockMode::skip})
    EXPECT_EQ(parse_network_lock_mode(network_lock_mode_name(m)).value(), m);
}

TEST(NetworkLockMatch, BothDirectionsOfV4AndV6) {
  LockedConnection c;
  c.family = AF_INET;
  c.local = {127, 0, 0, 1};
  c.remote = {10, 1, 2, 3};
  c.local_port = 5000;
  c.remote_port = 41000;
  auto m = nft_match(c);
  EXPECT_EQ(m.outgoing, "ip saddr 127.0.0.1 tcp sport 5000 ip daddr 10.1.2.3 tcp dport 41000");
  EXPECT_EQ(m.incoming, "ip saddr 10.1.2.3 tcp sport 41000 ip daddr 127.0.0.1 tcp dport 5000");
  auto i = iptables_match(c);
  EXPECT_EQ(i.outgoing, "-p tcp -s 127.0.0.1 --sport 5000 -d 10.1.2.3 --dport 41000");
  c.family = AF_INET6;
  c.local = {};
  c.local[15] = 1;
  c.remote = {0xfe, 0x80};
  c.remote[15] = 2;
  m = nft_match(c);
  EXPECT_EQ(m.outgoing, "ip6 saddr ::1 tcp sport 5000 ip6 daddr fe80::2 tcp dport 41000");
}

TEST(NetworkLock, NothingIsCreatedUntilAConnectionIsAdded) {
  std::string name = "t" + std::to_string(getpid()) + "a";
  {
    auto lock = NetworkLock::create(NetworkLockMode::nftables, name, quiet());
    ASSERT_TRUE(lock.has_value());
    EXPECT_EQ((*lock)->table(), "");
    EXPECT_FALSE((*lock)->needs_keeping());
    EXPECT_EQ(our_table_count("minicriu-" + name + "-"), 0u);
    auto kept = (*lock)->keep();
    ASSERT_TRUE(kept.has_value());
    EXPECT_EQ(kept->table, "");
    EXPECT_TRUE((*lock)->remove().has_value());
  }
  EXPECT_EQ(our_table_count("minicriu-" + name + "-"), 0u);
}

TEST(NetworkLock, NftablesDropsBothDirectionsUntilRemoved) {
  Loopback lb = make_loopback(AF_INET);
  auto lock = NetworkLock::create(NetworkLockMode::nftables, "t" + std::to_string(getpid()), quiet());
  ASSERT_TRUE(lock.has_value());
  auto st = (*lock)->add(lb.conn);
  ASSERT_TRUE(st.has_value()) << st.error().what();
  ASSERT_TRUE((*lock)->add(lb.conn).has_value());  // again: no second pair of rules, no error
  std::string table = (*lock)->table();
  EXPECT_TRUE(table.starts_with("minicriu-t" + std::to_string(getpid()) + "-")) << table;
  EXPECT_EQ((*lock)->mode(), NetworkLockMode::nftables);
  EXPECT_TRUE(table_present(table));
  expect_locked_then_delivered(lb, [&] {
    auto r = (*lock)->remove();
    EXPECT_TRUE(r.has_value()) << r.error().what();
  });
  EXPECT_FALSE(table_present(table));
  EXPECT_TRUE((*lock)->remove().has_value());  // twice is fine
}

TEST(NetworkLock, AutoChoosesNftablesAndTheDestructorRemovesTheTable) {
  Loopback lb = make_loopback(AF_INET);
  std::string table;
  {
    auto lock = NetworkLock::create(NetworkLockMode::automatic, "t" + std::to_string(getpid()), quiet());
    ASSERT_TRUE(lock.has_value());
    EXPECT_EQ((*lock)->mode(), NetworkLockMode::automatic);
    ASSERT_TRUE((*lock)->add(lb.conn).has_value());
    EXPECT_EQ((*lock)->mode(), NetworkLockMode::nftables);
    table = (*lock)->table();
    EXPECT_TRUE(table_present(table));
  }
  EXPECT_FALSE(table_present(table));
}

TEST(NetworkLock, Ipv6ConnectionIsLockedToo) {
  Loopback lb = make_loopback(AF_INET6);
  if (::testing::Test::HasFailure()) GTEST_SKIP() << "no IPv6 loopback here";
  auto lock = NetworkLock::create(NetworkLockMode::nftables, "t" + std::to_string(getpid()), quiet());
  ASSERT_TRUE(lock.has_value());
  auto st = (*lock)->add(lb.conn);
  ASSERT_TRUE(st.has_value()) << st.error().what();
  std::string table = (*lock)->table();
  EXPECT_TRUE(table_present(table));
  expect_locked_then_delivered(lb, [&] { EXPECT_TRUE((*lock)->remove().has_value()); });
  EXPECT_FALSE(table_present(table));
}

TEST(NetworkLock, KeptLockOutlivesTheObjectUntilNetworkUnlock) {
  Loopback lb = make_loopback(AF_INET);
  lb.conn.peer_outside = true;
  NetworkLock::Kept kept;
  std::string owned;
  {
    auto lock = NetworkLock::create(NetworkLockMode::nftables, "t" + std::to_string(getpid()), quiet());
    ASSERT_TRUE(lock.has_value());
    ASSERT_TRUE((*lock)->add(lb.conn).has_value());
    EXPECT_TRUE((*lock)->needs_keeping());
    owned = (*lock)->table();
    auto k = (*lock)->keep();
    ASSERT_TRUE(k.has_value()) << k.error().what();
    kept = *k;
  }
  EXPECT_EQ(kept.mode, NetworkLockMode::nftables);
  EXPECT_FALSE(table_present(owned));  // replaced in the same transaction
  EXPECT_TRUE(table_present(kept.table));
  expect_locked_then_delivered(lb, [&] {
    auto st = network_unlock(kept.mode, kept.table, quiet());
    EXPECT_TRUE(st.has_value()) << st.error().what();
  });
  EXPECT_FALSE(table_present(kept.table));
  // A second unlock finds nothing: one line saying so.
  auto again = network_unlock(kept.mode, kept.table, quiet());
  ASSERT_FALSE(again.has_value());
  EXPECT_NE(again.error().what().find(kept.table), std::string::npos);
  EXPECT_EQ(again.error().what().find('\n'), std::string::npos);
}

// Kept past the dump: only connections to peers outside the tree. One with
// both ends in the tree flows again at once (the restore reconnects such
// connections from their old ports when they waited to be accepted).
TEST(NetworkLock, KeepingLeavesOnlyConnectionsToPeersOutsideLocked) {
  Loopback outside = make_loopback(AF_INET);
  outside.conn.peer_outside = true;
  Loopback inside = make_loopback(AF_INET);
  NetworkLock::Kept kept;
  {
    auto lock = NetworkLock::create(NetworkLockMode::nftables, "k" + std::to_string(getpid()), quiet());
    ASSERT_TRUE(lock.has_value());
    ASSERT_TRUE((*lock)->add(outside.conn).has_value());
    ASSERT_TRUE((*lock)->add(inside.conn).has_value());
    ASSERT_EQ(send(inside.client.fd, "held", 4, 0), 4);
    EXPECT_EQ(receive(inside.server.fd, 300), "") << "delivered through the lock";
    auto k = (*lock)->keep();
    ASSERT_TRUE(k.has_value()) << k.error().what();
    kept = *k;
  }
  // Retransmitted now that its rules are gone.
  EXPECT_EQ(receive(inside.server.fd, 8000), "held");
  expect_locked_then_delivered(outside, [&] {
    auto st = network_unlock(kept.mode, kept.table, quiet());
    EXPECT_TRUE(st.has_value()) << st.error().what();
  });
}

TEST(NetworkLock, RemoveAfterKeepRemovesTheKeptTable) {
  Loopback lb = make_loopback(AF_INET);
  lb.conn.peer_outside = true;
  auto lock = NetworkLock::create(NetworkLockMode::nftables, "t" + std::to_string(getpid()), quiet());
  ASSERT_TRUE(lock.has_value());
  ASSERT_TRUE((*lock)->add(lb.conn).has_value());
  auto k = (*lock)->keep();
  ASSERT_TRUE(k.has_value());
  EXPECT_TRUE(table_present(k->table));
  ASSERT_TRUE((*lock)->remove().has_value());  // a dump failing after keep()
  EXPECT_FALSE(table_present(k->table));
}

TEST(NetworkLock, SkipCreatesNothing) {
  Loopback lb = make_loopback(AF_INET);
  std::string name = "t" + std::to_string(getpid()) + "s";
  auto lock = NetworkLock::create(NetworkLockMode::skip, name, quiet());
  ASSERT_TRUE(lock.has_value());
  ASSERT_TRUE((*lock)->add(lb.conn).has_value());
  ASSERT_TRUE((*lock)->add(lb.conn).has_value());
  EXPECT_EQ((*lock)->table(), "");
  EXPECT_EQ(our_table_count("minicriu-" + name + "-"), 0u);
  ASSERT_EQ(send(lb.client.fd, "x", 1, 0), 1);
  EXPECT_EQ(receive(lb.server.fd, 2000), "x");
}

TEST(NetworkLock, ProbeTableIsCreatedAndDeleted) {
  auto st = network_lock_probe_nftables();
  EXPECT_TRUE(st.has_value()) << st.error().what();
  EXPECT_EQ(our_table_count("minicriu-check-"), 0u);
}

TEST(NetworkLockIptables, MissingCommandIsOneLine) {
  if (iptables_available()) GTEST_SKIP() << "iptables-restore is installed here";
  Loopback lb = make_loopback(AF_INET);
  auto lock = NetworkLock::create(NetworkLockMode::iptables, "t", quiet());
  ASSERT_TRUE(lock.has_value());
  auto st = (*lock)->add(lb.conn);
  ASSERT_FALSE(st.has_value());
  EXPECT_NE(st.error().what().find("--network-lock iptables needs the iptables command"), std::string::npos)
      << st.error().what();
  EXPECT_NE(st.error().what().find("use --network-lock nftables"), std::string::npos);
  EXPECT_EQ(st.error().what().find('\n'), std::string::npos);
}

// Without the real commands here, stand-ins on PATH record what the backend
// feeds iptables-restore: the chain, the jumps, both rules, and its removal.
TEST(NetworkLockIptables, ScriptsGivenToIptablesRestore) {
  char tmpl[] = "/tmp/minicriu-fake-iptables-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl, log = dir + "/log";
  for (const char* cmd : {"iptables-restore", "ip6tables-restore"}) {
    std::ofstream(dir + "/" + cmd) << "#!/bin/sh\necho \"# " << cmd << " $*\" >> " << log << "\ncat >> " << log
                                   << "\n";
    chmod((dir + "/" + cmd).c_str(), 0755);
  }
  std::string old_path = getenv("PATH") ? getenv("PATH") : "";
  setenv("PATH", (dir + ":" + old_path).c_str(), 1);
  LockedConnection c;
  c.family = AF_INET;
  c.local = {127, 0, 0, 1};
  c.remote = {127, 0, 0, 2};
  c.local_port = 5;
  c.remote_port = 6;
  std::string chain;
  {
    auto lock = NetworkLock::create(NetworkLockMode::iptables, "t", quiet());
    ASSERT_TRUE(lock.has_value());
    auto st = (*lock)->add(c);
    EXPECT_TRUE(st.has_value()) << st.error().what();
    chain = (*lock)->table();
    EXPECT_TRUE(chain.starts_with("MINICRIU-")) << chain;
    EXPECT_LE(chain.size(), 28u);  // iptables' longest chain name
  }
  setenv("PATH", old_path.c_str(), 1);
  std::string text((std::istreambuf_iterator<char>(*std::make_unique<std::ifstream>(log))), {});
  std::string expected =
      "# iptables-restore -w --noflush\n*filter\n:" + chain + " - [0:0]\n-A " + chain +
      " -p tcp -s 127.0.0.1 --sport 5 -d 127.0.0.2 --dport 6 -j DROP\n-A " + chain +
      " -p tcp -s 127.0.0.2 --sport 6 -d 127.0.0.1 --dport 5 -j DROP\n-I INPUT 1 -j " + chain +
      "\n-I OUTPUT 1 -j " + chain + "\nCOMMIT\n" + "# iptables-restore -w --noflush\n*filter\n-D INPUT -j " +
      chain + "\n-D OUTPUT -j " + chain + "\n-F " + chain + "\n-X " + chain + "\nCOMMIT\n";
  EXPECT_EQ(text, expected);
  std::system(("rm -rf " + dir).c_str());
}

// The table is owned by the netlink socket of the lock's libnftables context:
// a dumper killed outright (SIGKILL, no destructor) leaves no table behind.
TEST(NetworkLock, TableGoesWhenTheDumperIsKilled) {
  Loopback lb = make_loopback(AF_INET);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = NetworkLock::create(NetworkLockMode::nftables, "t" + std::to_string(getpid()), quiet());
    if (!lock || !(*lock)->add(lb.conn)) _exit(1);
    // A program started meanwhile (as a runtime linking the library may)
    // must not hold the table alive through an inherited socket.
    pid_t sleeper = fork();
    if (sleeper == 0) {
      execl("/bin/sleep", "sleep", "30", nullptr);
      _exit(127);
    }
    std::string table = (*lock)->table() + "\n" + std::to_string(sleeper) + "\n";
    if (write(pipefd[1], table.data(), table.size()) != static_cast<ssize_t>(table.size())) _exit(1);
    for (;;) pause();
  }
  close(pipefd[1]);
  char buf[128] = {};
  ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
  close(pipefd[0]);
  ASSERT_GT(n, 1);
  std::string text(buf, static_cast<size_t>(n));
  std::string table = text.substr(0, text.find('\n'));
  pid_t sleeper = static_cast<pid_t>(std::atoi(text.substr(text.find('\n') + 1).c_str()));
  ASSERT_GT(sleeper, 0) << text;
  // Until the sleeper has exec'd, it holds the lock's socket like its parent.
  std::string exe = "/proc/" + std::to_string(sleeper) + "/exe";
  for (int i = 0; i < 500; i++) {
    char target[256] = {};
    if (readlink(exe.c_str(), target, sizeof target - 1) > 0 && std::string(target).ends_with("/sleep")) break;
    usleep(10 * 1000);
  }
  EXPECT_TRUE(table_present(table));
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  EXPECT_EQ(kill(sleeper, 0), 0) << "the sleeper still runs";
  EXPECT_FALSE(table_present(table));
  kill(sleeper, SIGKILL);
  ASSERT_EQ(send(lb.client.fd, "x", 1, 0), 1);
  EXPECT_EQ(receive(lb.server.fd, 8000), "x");
}

// Where nftables refuses us (here: a user namespace of our own, without
// CAP_NET_ADMIN over this network namespace) and no iptables command exists,
// auto fails in one line naming --network-lock skip, and nftables names the
// kernel's refusal.
TEST(NetworkLock, AutoWithoutAnyFirewallNamesSkip) {
  if (iptables_available()) GTEST_SKIP() << "iptables-restore is installed here: auto would use it";
  Loopback lb = make_loopback(AF_INET);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::string out;
    if (unshare(CLONE_NEWUSER) != 0) {
      out = "SKIP unshare(CLONE_NEWUSER): " + std::string(strerror(errno));
    } else {
      // Whatever libnftables would print on its own must not reach stderr.
      FILE* err = tmpfile();
      dup2(fileno(err), STDERR_FILENO);
      for (auto mode : {NetworkLockMode::automatic, NetworkLockMode::nftables}) {
        auto lock = NetworkLock::create(mode, "t" + std::to_string(getpid()), quiet());
        auto st = (*lock)->add(lb.conn);
        out += st ? std::string("locked\n") : st.error().what() + "\n";
      }
      auto probe = network_lock_probe_nftables();
      out += probe ? std::string("probe ok\n") : probe.error().what() + "\n";
      char text[512] = {};
      if (pread(fileno(err), text, sizeof(text) - 1, 0) > 0) out += std::string("STDERR: ") + text;
    }
    (void)!write(pipefd[1], out.data(), out.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string out;
  char buf[1024];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int st;
  waitpid(child, &st, 0);
  if (out.starts_with("SKIP")) GTEST_SKIP() << out;
  auto nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos) << out;
  std::string automatic = out.substr(0, nl), nftables = out.substr(nl + 1);
  nl = nftables.find('\n');
  ASSERT_NE(nl, std::string::npos) << out;
  std::string probe = nftables.substr(nl + 1);
  nftables.resize(nl + 1);
  EXPECT_TRUE(probe.starts_with("nftables: creating table inet minicriu-check-")) << probe;
  EXPECT_NE(probe.find("Operation not permitted\n"), std::string::npos) << probe;
  EXPECT_EQ(out.find("STDERR"), std::string::npos) << out;
  EXPECT_NE(automatic.find("locking test connection: cannot lock the tree's TCP connections: nftables: "
                           "creating table inet minicriu-t"),
            std::string::npos)
      << automatic;
  EXPECT_NE(automatic.find("Operation not permitted"), std::string::npos) << automatic;
  EXPECT_NE(automatic.find("no iptables command is installed; --network-lock skip dumps without a lock"),
            std::string::npos)
      << automatic;
  EXPECT_NE(nftables.find("locking test connection: nftables: creating table inet minicriu-t"), std::string::npos)
      << nftables;
  EXPECT_EQ(std::count(nftables.begin(), nftables.end(), '\n'), 1) << nftables;
}

// The C ABI's setter: a bad mode fails minicriu_dump in one line before
// anything is looked at (here the pid is our own, never touched).
TEST(NetworkLockCApi, BadModeFailsTheDumpBeforeAnythingIsTouched) {
  minicriu_dump_opts* opts = minicriu_dump_opts_new();
  ASSERT_NE(opts, nullptr);
  EXPECT_EQ(minicriu_dump_opts_set_pid(opts, getpid()), 0);
  EXPECT_EQ(minicriu_dump_opts_set_images_dir(opts, "/nonexistent-minicriu-dir"), 0);
  EXPECT_EQ(minicriu_dump_opts_set_network_lock(opts, nullptr), -1);
  EXPECT_EQ(minicriu_dump_opts_set_network_lock(opts, "bogus"), 0);
  EXPECT_EQ(minicriu_dump(opts), -1);
  EXPECT_STREQ(minicriu_last_error(), "--network-lock \"bogus\": expected auto, nftables, iptables or skip");
  minicriu_dump_opts_free(opts);
}

TEST(NetworkLock, OnlyNamesMinicriuMakesAreUnlocked) {
  EXPECT_TRUE(is_network_lock_name(NetworkLockMode::nftables, "minicriu-1234-0badf00d"));
  EXPECT_TRUE(is_network_lock_name(NetworkLockMode::nftables, "minicriu-1234-0badf00d-kept"));
  EXPECT_TRUE(is_network_lock_name(NetworkLockMode::iptables, "MINICRIU-0badf00d"));
  EXPECT_FALSE(is_network_lock_name(NetworkLockMode::nftables, "filter"));
  EXPECT_FALSE(is_network_lock_name(NetworkLockMode::nftables, "minicriu-1-0badf00d\nflush ruleset"));
  EXPECT_FALSE(is_network_lock_name(NetworkLockMode::iptables, "INPUT"));
  auto st = network_unlock(NetworkLockMode::nftables, "x; flush ruleset", quiet());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("not a name minicriu gives its tables"), std::string::npos) << st.error().what();
}
