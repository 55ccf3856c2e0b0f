// Named unix sockets at dump and restore: listeners on a path and on an
// abstract name with accepted connections and connections not yet accepted
// (tests/programs/unixnamed.c), named datagram sockets and paths unlinked or
// replaced (unixdgram.c); and the refusals: a connection not yet accepted
// from a client outside the tree, and one that a --leave-running dump would
// have to consume.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(UnixNamed, ListenersWithWaitingConnectionsPassTheirChecksWithoutACheckpoint) {
  TempDir dir;
  Program p("unixnamed", dir, {"full"});
  ASSERT_TRUE(p.wait_ready());
  expect_intact(p);
}

TEST(UnixNamed, ListenersAcceptedAndWaitingConnectionsComeBackTwice) { cycle("unixnamed", 2, {"full"}); }

TEST(UnixNamed, ListenersWithoutWaitingConnectionsComeBackTwice) { cycle("unixnamed", 2, {"nopending"}); }

TEST(UnixNamed, NamedDatagramSocketsAndUnlinkedOrReplacedPathsComeBackTwice) { cycle("unixdgram", 2); }

// Bound by a relative path the cwd no longer leads to, and in directories
// removed since.
TEST(UnixNamed, NamesThatNoLongerLeadToTheirSocketsComeBackTwice) { cycle("unixgone", 2); }

TEST(UnixNamed, ShowNamesListenersAndWaitingConnections) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("unixnamed", dir, {"full"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  RestoredTree restored;
  restored.add_from(images);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0);
  std::string path = dir / "listen.sock";
  EXPECT_NE(text.output.find(fmt::format("bound to {} listening (backlog 5), 1 connection(s) not yet accepted", path)),
            std::string::npos) << text.output;
  EXPECT_NE(text.output.find(fmt::format("bound to @minicriu-seq-{} listening (backlog 3), 1 connection(s) not "
                                         "yet accepted", pid)), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("waiting to be accepted"), std::string::npos) << text.output;
  // The data of the connections not yet accepted is in the image.
  auto view = show_json(images);
  std::multiset<std::string> waiting;
  for (auto& f : view.files())
    if (f.has_unix_sk())
      for (auto& c : f.unix_sk().pending())
        for (auto& m : c.queue()) waiting.insert(m);
  EXPECT_EQ(waiting, (std::multiset<std::string>{"pending-stream-data", "pending-1", "pending-second"}));
  ASSERT_EQ(restore_detached(images), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "unixnamed.log");
}

TEST(UnixNamed, LeaveRunningWithAWaitingConnectionIsRefusedAndTargetLeftIntact) {
  TempDir dir;
  Program p("unixnamed", dir, {"full"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir), "--leave-running"});
  expect_one_line_error(r, "1 connection(s) not yet accepted, whose data minicriu can only read by accepting "
                           "them; let the application accept them first, or dump without --leave-running");
  EXPECT_NE(r.output.find(fmt::format("listening on {}", dir / "listen.sock")), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  // The program accepts both waiting connections and finds their data.
  expect_intact(p);
}

TEST(UnixNamed, AWaitingConnectionFromOutsideTheTreeIsRefusedAndTargetLeftIntact) {
  TempDir dir;
  Program p("unixnamed", dir, {"external"});
  ASSERT_TRUE(p.wait_ready());
  std::string path = dir / "listen.sock";
  int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::send(c, "external-data", 13, 0), 13);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, fmt::format("listening on {} has a connection not yet accepted from socket:[{}] held by "
                                       "pid {} (", path, ino_of(c), ::getpid()));
  EXPECT_NE(r.output.find("outside the dumped tree; let the application accept it before the dump"),
            std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  // Still waiting, with its data: the program accepts it and reads it.
  expect_intact(p);
  ::close(c);
}
