// The page server (`minicriu page-server`): a dump streams its pages over TCP
// (loopback here) to a server, which also receives the other images, so its
// directory is a whole checkpoint while the dump's own holds no page image;
// restores read every page from the server, as many as ask. A server that
// dies during a dump fails it in one line and the tree runs on, untouched;
// a restore whose server is gone (or serves another checkpoint) fails in
// one line before anything is made.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;
using Clock = std::chrono::steady_clock;

namespace {

// `minicriu page-server -D DIR --port 0` as our child, on the free port it
// prints; killed (SIGTERM, then SIGKILL) and reaped at the end.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& dir, const std::string& log) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      int l = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      int in = ::open("/dev/null", O_RDONLY);
      ::dup2(in, 0);
      ::dup2(out[1], 1);
      ::dup2(l, 2);
      ::close_range(3, ~0u, 0);
      std::string bin = minicriu_bin();
      ::execl(bin.c_str(), bin.c_str(), "page-server", "-D", dir.c_str(), "--port", "0", "--address", "127.0.0.1",
              "-v", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    // "listening on 127.0.0.1:PORT pid PID"
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    auto colon = line.rfind(':');
    if (line.starts_with("listening on ") && colon != std::string::npos) port_ = std::stoi(line.substr(colon + 1));
  }
  ~ServerProcess() { stop(SIGTERM); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool ok() const { return port_ > 0; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // The exit status (128+signal), once it is gone.
  int stop(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    auto st = wait_pid(pid_, 5000);
    if (!st) {
      ::kill(pid_, SIGKILL);
      st = wait_pid(pid_, 5000);
    }
    pid_ = -1;
    return st.value_or(-1);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

uint64_t file_size(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string pages_img(const std::string& dir, pid_t pid) { return dir + "/pages-" + std::to_string(pid) + ".img"; }

// dump -t PID -D local --page-server ADDR (killing the tree), expected to succeed.
void dump_through(Program& p, const std::string& local, const ServerProcess& server) {
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", local, "--page-server", server.address()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
}

// restore -d from the local images and the server; the program checks every
// word and exits 0.
void restore_and_verify(pid_t pid, const std::vector<std::string>& restore_args, const std::string& complete,
                        const TempDir& dir) {
  RestoredTree restored;
  restored.add_from(complete);
  std::vector<std::string> args = {"restore", "-d"};
  args.insert(args.end(), restore_args.begin(), restore_args.end());
  auto r = run_minicriu(args);
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(pid_exists(pid));
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "bigmem.log");
}

}  // namespace

// Most tests: a dir, the server's directory (served) with a server on it,
// and the dump's own (local).
class PageServer : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server.ok()) << read_text(dir / "server.log"); }
  TempDir dir;
  std::string served = images_dir(dir, "served"), local = images_dir(dir, "local");
  ServerProcess server{served, dir / "server.log"};
};

TEST_F(PageServer, DumpStreamsPagesToTheServerAndRestoreReadsEveryWordBack) {
  Program p("bigmem", dir, {"256"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_through(p, local, server));
  // The pages are the server's; the other images are on both sides.
  EXPECT_FALSE(exists(pages_img(local, pid)));
  EXPECT_TRUE(exists(local + "/inventory.img"));
  EXPECT_TRUE(exists(served + "/inventory.img"));
  EXPECT_GE(file_size(pages_img(served, pid)), 256ull << 20);
  auto view = show_json(served);
  ASSERT_EQ(view.processes_size(), 1);
  EXPECT_GE(dumped_pages(view.processes(0)), (256ull << 20) / 4096);
  EXPECT_EQ(view.inventory().page_server(), server.address());
  // Without the server, the local images say where the pages are.
  expect_one_line_error(run_minicriu({"restore", "-D", local}), "--page-server " + server.address());
  ASSERT_NO_FATAL_FAILURE(restore_and_verify(pid, {"-D", local, "--page-server", server.address()}, served, dir));
}

TEST_F(PageServer, ServesOneRestoreAfterAnotherAndItsDirectoryIsACheckpoint) {
  Program p("bigmem", dir, {"64"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  // CRIU's form of the option.
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", local, "--page-server", "--address", "127.0.0.1",
                         "--port", std::to_string(server.port())});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  // Each restore runs the program to its end (the pid is free again), the
  // server still there for the next.
  ASSERT_NO_FATAL_FAILURE(restore_and_verify(pid, {"-D", local, "--page-server", server.address()}, served, dir));
  ASSERT_NO_FATAL_FAILURE(restore_and_verify(
      pid, {"-D", local, "--page-server", "--address", "127.0.0.1", "--port", std::to_string(server.port())}, served,
      dir));
  // The server's directory alone is a checkpoint.
  ASSERT_NO_FATAL_FAILURE(restore_and_verify(pid, {"-D", served}, served, dir));
  EXPECT_TRUE(pid_exists(server.pid()));
  EXPECT_EQ(server.stop(SIGTERM), 0) << read_text(dir / "server.log");
}

TEST_F(PageServer, ServerKilledDuringTheDumpFailsItInOneLineAndTheTreeRunsOnIntact) {
  Program p("bigmem", dir, {"1024"});
  ASSERT_TRUE(p.wait_ready(30000));
  Holdings before = holdings_of(p.pid());
  auto dump = std::async(std::launch::async, [&] {
    return run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", local, "--page-server", server.address()});
  });
  // Killed once the pages flow.
  std::string part = pages_img(served, p.pid()) + ".part";
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (file_size(part) < (32u << 20) && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  ASSERT_GE(file_size(part), 32u << 20) << "the pages never reached the server";
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  CommandResult r = dump.get();
  expect_one_line_error(r, "page server " + server.address());
  EXPECT_FALSE(exists(local + "/inventory.img"));
  ASSERT_TRUE(p.alive());
  EXPECT_EQ(holdings_of(p.pid()), before);
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

TEST(PageServerGone, RestoreWhoseServerIsGoneOrServesAnotherCheckpointFailsInOneLineAndLeavesNothing) {
  TempDir dir;
  std::string served = images_dir(dir, "served"), local = images_dir(dir, "local");
  std::string other = images_dir(dir, "other");
  pid_t pid = 0;
  {
    ServerProcess server(served, dir / "server.log");
    ASSERT_TRUE(server.ok()) << read_text(dir / "server.log");
    Program p("bigmem", dir, {"16"});
    ASSERT_TRUE(p.wait_ready());
    pid = p.pid();
    ASSERT_NO_FATAL_FAILURE(dump_through(p, local, server));
    ASSERT_TRUE(wait_gone(pid));
    EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
    auto r = run_minicriu({"restore", "-d", "-D", local, "--page-server", server.address()});
    expect_one_line_error(r, "page server " + server.address() + ": cannot connect");
    EXPECT_FALSE(pid_exists(pid));
  }
  // A server of another checkpoint (its own dump of another run).
  ServerProcess another(other, dir / "another.log");
  ASSERT_TRUE(another.ok()) << read_text(dir / "another.log");
  Program q("bigmem", dir, {"16"});
  ASSERT_TRUE(q.wait_ready());
  pid_t qpid = q.pid();  // forgotten by q once dumped
  std::string local2 = images_dir(dir, "local2");
  ASSERT_NO_FATAL_FAILURE(dump_through(q, local2, another));
  ASSERT_TRUE(wait_gone(qpid));
  auto r = run_minicriu({"restore", "-d", "-D", local, "--page-server", another.address()});
  expect_one_line_error(r, "serves another checkpoint");
  EXPECT_FALSE(pid_exists(pid));
  EXPECT_FALSE(pid_exists(qpid));
}

TEST(PageServerGone, RefusedCombinationsAndAnAbsentServerLeaveTheTreeIntact) {
  TempDir dir;
  std::string local = images_dir(dir, "local");
  Program p("bigmem", dir, {"8"});
  ASSERT_TRUE(p.wait_ready());
  Holdings before = holdings_of(p.pid());
  std::string pid = std::to_string(p.pid());
  // Nobody listens on that port (a server that was and is gone).
  int port = 0;
  {
    ServerProcess gone(images_dir(dir, "gone"), dir / "gone.log");
    ASSERT_TRUE(gone.ok());
    port = gone.port();
  }
  std::string addr = "127.0.0.1:" + std::to_string(port);
  expect_one_line_error(run_minicriu({"dump", "-t", pid, "-D", local, "--page-server", addr}),
                        "page server " + addr + ": cannot connect");
  expect_one_line_error(
      run_minicriu({"dump", "-t", pid, "-D", local, "--page-server", addr, "--prev-images-dir", "../x"}),
      "with --prev-images-dir: not supported");
  expect_one_line_error(run_minicriu({"pre-dump", "-t", pid, "-D", local, "--page-server", addr}),
                        "only dump and restore take a page server");
  expect_one_line_error(run_minicriu({"dump", "-t", pid, "-D", local, "--page-server", "nohostport"}),
                        "expected HOST:PORT");
  expect_one_line_error(run_minicriu({"dump", "-t", pid, "-D", local, "--page-server", "--port", "5"}),
                        "needs --address HOST and --port N");
  EXPECT_FALSE(exists(local + "/inventory.img"));
  EXPECT_EQ(holdings_of(p.pid()), before);
  ASSERT_NO_FATAL_FAILURE(expect_intact(p));
}

// Post-copy: restore --lazy --page-server runs the tree at once and fetches
// each page of its 1 GiB from the server on first touch (and by prefetch);
// every word comes back.
TEST_F(PageServer, LazyRestoreFetchesThePagesFromTheServer) {
  Program p("bigmem", dir, {"1024"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_through(p, local, server));
  ASSERT_NO_FATAL_FAILURE(
      restore_and_verify(pid, {"-D", local, "--lazy", "--page-server", server.address()}, served, dir));
}

// Shared memory under restore --lazy --page-server: its data lies with the
// metadata (shmem-ID.data, local), the private pages on the server; both
// come on first touch, and every word of the shared memory of a parent and
// its child comes back (tests/programs/lazyshm.c).
TEST_F(PageServer, LazyRestoreOfSharedMemoryThroughTheServer) {
  Program p("lazyshm", dir, {"64"});
  ASSERT_TRUE(p.wait_ready(60000));
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_through(p, local, server));
  // The child, killed with its parent, reparented to us.
  for (int i = 0; i < 5; i++, std::this_thread::sleep_for(std::chrono::milliseconds(50))) reap_zombies();
  RestoredTree restored;
  restored.add_from(served);
  std::string log = dir / "restore.log";
  auto r = run_minicriu({"restore", "-d", "--lazy", "-v3", "-o", log, "-D", local, "--page-server", server.address()});
  ASSERT_EQ(r.status, 0) << r.output << read_text(log);
  ASSERT_TRUE(pid_exists(pid));
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid, 60000).value_or(-1), 0) << read_text(dir / "lazyshm.log") << read_text(log);
  // The detached pager ends once every page is in: 64 + 32 MiB of shared
  // memory came through it.
  auto until = Clock::now() + std::chrono::seconds(30);
  while (read_text(log).find("every page is in") == std::string::npos && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::string text = read_text(log);
  EXPECT_NE(text.find("and 96 MiB of 2 shared memory object(s)"), std::string::npos) << text;
  EXPECT_NE(text.find("96 MiB shared memory copied"), std::string::npos) << text;
}

// The server killed while a lazy restore still fetches: the restored tree is
// killed (never left hanging in a fault) and the restore fails in one line.
TEST_F(PageServer, ServerKilledDuringALazyRestoreKillsTheTreeInOneLine) {
  Program p("bigmem", dir, {"1024"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  ASSERT_NO_FATAL_FAILURE(dump_through(p, local, server));
  RestoredTree restored;
  restored.add_from(served);
  // Not detached: the restore serves the faults until every page is in.
  auto running = std::async(std::launch::async, [&] {
    return run_minicriu({"restore", "-D", local, "--lazy", "--page-server", server.address()});
  });
  // Running again (its comm is the program's once the blob is done, not
  // the restore's), its pages still coming.
  auto until = Clock::now() + std::chrono::seconds(20);
  auto comm = [&] { return read_text("/proc/" + std::to_string(pid) + "/comm"); };
  while (comm() != "bigmem\n" && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(comm(), "bigmem\n");
  server.stop(SIGKILL);
  if (running.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ::kill(pid, SIGKILL);  // every page came before the kill: the restore waits for the tree
    FAIL() << "the lazy restore did not fail after its page server was killed";
  }
  auto r = running.get();
  // One error, the pager's (a warning of what the kill cut short may come
  // before it).
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("minicriu: error: lazy restore failed, the restored tree is killed: "), std::string::npos)
      << r.output;
  size_t errors = 0;
  for (size_t at = r.output.find("error: "); at != std::string::npos; at = r.output.find("error: ", at + 1)) errors++;
  EXPECT_EQ(errors, 1u) << r.output;
  EXPECT_NE(r.output.find("pid " + std::to_string(pid)), std::string::npos) << r.output;
  EXPECT_TRUE(wait_pid(pid, 5000).has_value() || !pid_exists(pid));
}
