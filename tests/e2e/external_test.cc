// A unix socket whose peer is outside the dumped tree, as a runtime lives it:
// the runtime (this test) talks to a rank (its child) over a socket pair. A
// plain dump of the rank refuses in one line and the rank keeps answering;
// `dump --ext-unix-sk` or `--external unix[INODE]`, then `restore
// --inherit-fd` with a fresh pair, and the restored rank answers on the new
// socket with its state intact. The C ABI's hooks are exercised by
// examples/runtime_rank.c, run here too.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "e2e_util.hpp"
#include "minicriu/minicriu.h"

using namespace e2e;

namespace {

// One question to the rank: its answer "K COUNT ok".
std::string ask(int fd, unsigned k) {
  std::string q = fmt::format("ask {}\n", k);
  EXPECT_EQ(::send(fd, q.data(), q.size(), MSG_NOSIGNAL), static_cast<ssize_t>(q.size()));
  std::string line;
  char c;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  return "no answer (" + line + ")";
}

struct Pair {
  int runtime = -1, rank = -1;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    runtime = sv[0];
    rank = sv[1];
  }
  ~Pair() {
    ::close(runtime);
    if (rank >= 0) ::close(rank);
  }
};

// Starts the rank, asks it twice, and dumps it with `accept_args` after a
// refused plain dump; returns the rank's socket inode. The rank is dead and
// reaped on return.
uint64_t dump_rank(const TempDir& dir, const std::string& images,
                   const std::function<std::vector<std::string>(uint64_t)>& accept_args) {
  Pair p;
  Program rank("rank", dir, {"3"}, p.rank);
  ::close(p.rank);
  p.rank = -1;
  EXPECT_TRUE(rank.wait_ready());
  uint64_t ino = 0;
  {
    // The rank's socket: the peer of ours.
    std::string link = std::filesystem::read_symlink(fmt::format("/proc/{}/fd/3", rank.pid()));
    ino = std::stoull(link.substr(8));
  }
  EXPECT_EQ(ask(p.runtime, 1), "1 0 ok");
  auto refused = run_minicriu({"dump", "-t", std::to_string(rank.pid()), "-D", images});
  expect_one_line_error(refused, fmt::format("pid {}: fd 3: unix stream socket:[{}] is connected to "
                                             "socket:[{}] held by pid {} (", rank.pid(), ino,
                                             ino_of(p.runtime), ::getpid()));
  EXPECT_NE(refused.output.find(fmt::format("--external unix[{}]", ino)), std::string::npos);
  EXPECT_NE(refused.output.find(fmt::format("--inherit-fd fd[N]:socket:[{}]", ino)), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  // Refused: the rank runs on and answers.
  EXPECT_EQ(ask(p.runtime, 2), "2 1 ok");
  std::vector<std::string> args{"dump", "-t", std::to_string(rank.pid()), "-D", images};
  for (auto& a : accept_args(ino)) args.push_back(a);
  auto dumped = run_minicriu(args);
  EXPECT_EQ(dumped.status, 0) << dumped.output;
  // We are its parent: the dump leaves it a zombie for us.
  EXPECT_EQ(wait_pid(rank.pid()), 128 + SIGKILL);
  rank.forget();
  auto view = show_json(images);
  bool found = false;
  for (auto& f : view.files())
    if (f.has_unix_sk() && f.unix_sk().ino() == ino) {
      found = true;
      EXPECT_TRUE(f.unix_sk().external());
      EXPECT_EQ(f.unix_sk().peer_pid(), static_cast<uint32_t>(::getpid()));
    }
  EXPECT_TRUE(found);
  return ino;
}

// Restores the rank with a fresh pair and talks to it: its count goes on
// from `count` (the questions it answered before the dump).
void restore_and_talk_from(const std::string& images, uint64_t ino, unsigned count) {
  Pair fresh;
  RestoredTree tree;
  tree.add_from(images);
  auto r = run_minicriu({"restore", "-d", "-D", images, "--inherit-fd", fmt::format("fd[3]:socket:[{}]", ino)},
                        fresh.rank);
  ASSERT_EQ(r.status, 0) << r.output;
  pid_t pid = std::stoi(r.output);
  ::close(fresh.rank);
  fresh.rank = -1;
  EXPECT_EQ(ask(fresh.runtime, 3), fmt::format("3 {} ok", count));
  EXPECT_EQ(ask(fresh.runtime, 4), fmt::format("4 {} ok", count + 1));
  ASSERT_EQ(::send(fresh.runtime, "quit\n", 5, MSG_NOSIGNAL), 5);
  EXPECT_EQ(wait_pid(pid), 0);
}

void restore_and_talk(const std::string& images, uint64_t ino) { restore_and_talk_from(images, ino, 2); }

}  // namespace

TEST(ExternalUnixSocket, ExtUnixSkThenInheritFdGivesTheRankAFreshConnection) {
  TempDir dir;
  std::string images = images_dir(dir);
  uint64_t ino = dump_rank(dir, images, [](uint64_t) { return std::vector<std::string>{"--ext-unix-sk"}; });
  restore_and_talk(images, ino);
}

TEST(ExternalUnixSocket, ExternalByInodeAndARestoreWithoutStandInIsRefused) {
  TempDir dir;
  std::string images = images_dir(dir);
  uint64_t ino = dump_rank(dir, images, [](uint64_t ino) {
    return std::vector<std::string>{"--external", fmt::format("unix[{}]", ino)};
  });
  auto view = show_json(images);
  pid_t pid = static_cast<pid_t>(view.inventory().root_pid());
  auto missing = run_minicriu({"restore", "-d", "-D", images});
  expect_one_line_error(missing, fmt::format("--inherit-fd fd[N]:socket:[{}]", ino));
  EXPECT_FALSE(pid_exists(pid));
  // A typo names what the images do hold.
  Pair spare;
  auto typo = run_minicriu({"restore", "-d", "-D", images, "--inherit-fd",
                            fmt::format("fd[3]:socket:[{}]", ino + 1)}, spare.rank);
  expect_one_line_error(typo, fmt::format("the images hold no external socket:[{}]", ino + 1));
  EXPECT_FALSE(pid_exists(pid));
  restore_and_talk(images, ino);
}

// examples/runtime_rank.c, the seed's runtime: its rank's stdio pipes, unix
// socket and TCP connection to it, checkpointed twice while it runs on.
TEST(ExternalUnixSocket, ARuntimeUsesTheLibraryHooks) {
  TempDir dir;
  auto r = run({RUNTIME_RANK_BIN, images_dir(dir), "2"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("exited with 0 after 2 checkpoint(s); counts stdin 7, unix 5, tcp 7"), std::string::npos)
      << r.output;
}

// A rank that connected to its runtime's listening socket before the runtime
// accepted it: the connection waits in a queue outside the tree. Refused by
// default naming the listener and the options; with --ext-unix-sk it is
// external like any other, and the restored rank answers on what
// --inherit-fd gives.
TEST(ExternalUnixSocket, AConnectionWaitingOnAListenerOutsideIsExternalToo) {
  TempDir dir;
  std::string images = images_dir(dir);
  std::string path = dir / "runtime.sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  uint64_t ino = ino_of(client);
  Program rank("rank", dir, {"3"}, client);
  ::close(client);
  ASSERT_TRUE(rank.wait_ready());
  auto refused = run_minicriu({"dump", "-t", std::to_string(rank.pid()), "-D", images});
  expect_one_line_error(refused, fmt::format("pid {}: fd 3: unix stream socket:[{}] waits to be accepted by "
                                             "a listener outside the dumped tree ({}); to dump it as "
                                             "external pass --external unix[{}]", rank.pid(), ino, path, ino));
  EXPECT_TRUE(rank.alive());
  auto dumped = run_minicriu({"dump", "-t", std::to_string(rank.pid()), "-D", images, "--ext-unix-sk"});
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_EQ(wait_pid(rank.pid()), 128 + SIGKILL);
  rank.forget();
  ::close(listener);
  restore_and_talk_from(images, ino, 0);
}

// No exception crosses the C ABI: a dump hook that throws (C++ code behind a
// C callback) makes minicriu_dump return -1 with the exception's text, after
// the dump unwound like any failed one: the rank runs on, unharmed.
TEST(ExternalUnixSocket, AnExceptionInAHookIsAnErrorOfTheCAbiAndTheRankRunsOn) {
  TempDir dir;
  std::string images = images_dir(dir);
  Pair p;
  Program rank("rank", dir, {"3"}, p.rank);
  ::close(p.rank);
  p.rank = -1;
  ASSERT_TRUE(rank.wait_ready());
  EXPECT_EQ(ask(p.runtime, 1), "1 0 ok");
  minicriu_dump_opts* opts = minicriu_dump_opts_new();
  ASSERT_NE(opts, nullptr);
  ASSERT_EQ(minicriu_dump_opts_set_pid(opts, rank.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(opts, images.c_str()), 0);
  minicriu_external_dump_fn throwing = [](const minicriu_external*, void*) -> int {
    throw std::runtime_error("the runtime's hook gave up");
  };
  ASSERT_EQ(minicriu_dump_opts_set_external_hook(opts, throwing, nullptr), 0);
  EXPECT_EQ(minicriu_dump(opts), -1);
  EXPECT_EQ(std::string(minicriu_last_error()), "internal error: the runtime's hook gave up");
  minicriu_dump_opts_free(opts);
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  EXPECT_EQ(ask(p.runtime, 2), "2 1 ok");
  ASSERT_EQ(::send(p.runtime, "quit\n", 5, MSG_NOSIGNAL), 5);
  EXPECT_EQ(rank.wait_exit().value_or(-1), 0);
}
