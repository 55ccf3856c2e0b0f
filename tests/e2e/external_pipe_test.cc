// Pipes and fifos also held outside the dumped tree, as a runtime lives them:
// the runtime (this test) talks to a rank (its child) over the rank's stdin,
// stdout and stderr, whose other ends it holds. A plain dump refuses in one
// line naming the options; --external pipe[INODE] accepts one, --ext-pipes
// all, the library's hook whichever it likes; a question queued in the
// rank's stdin at the dump is carried into the pipe standing in for it; a
// pipe the rank wrote to with bytes still queued is refused; restore plants
// what --inherit-fd or the hook gives, and fails in one line, creating
// nothing, when a pipe has no stand-in.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "e2e_util.hpp"
#include "minicriu/minicriu.h"

using namespace e2e;

namespace {

// One line from fd, within 10 s ("" if none came).
std::string read_line(int fd) {
  std::string line;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return line + "(no answer)";
    char c;
    if (::read(fd, &c, 1) != 1) return line + "(end)";
    if (c == '\n') return line;
    line += c;
  }
}

void say(int fd, const std::string& text) {
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
}

// Three fresh pipes: the runtime's ends and the rank's.
struct StdioPipes {
  int runtime[3] = {-1, -1, -1};  // stdin's write end, stdout's and stderr's read ends
  int rank[3] = {-1, -1, -1};     // stdin's read end, stdout's and stderr's write ends
  StdioPipes() {
    for (int i = 0; i < 3; i++) {
      int p[2];
      EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
      runtime[i] = i == 0 ? p[1] : p[0];
      rank[i] = i == 0 ? p[0] : p[1];
    }
  }
  ~StdioPipes() {
    close_rank_ends();
    for (int fd : runtime) ::close(fd);
  }
  void close_rank_ends() {
    for (int& fd : rank) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
  uint64_t ino(int i) const { return ino_of(runtime[i]); }
  // "fd[3]:pipe:[IN]", "fd[4]:pipe:[OUT]", "fd[5]:pipe:[ERR]" for the dumped
  // pipes `old`, this pair's rank ends passed as fds 3, 4, 5.
  std::vector<std::string> inherit_args(const std::vector<uint64_t>& old) const {
    std::vector<std::string> args;
    for (size_t i = 0; i < old.size(); i++) {
      args.push_back("--inherit-fd");
      args.push_back(fmt::format("fd[{}]:pipe:[{}]", 3 + i, old[i]));
    }
    return args;
  }
  std::vector<int> rank_fds() const { return {rank[0], rank[1], rank[2]}; }
};

// The rank, our child, on a set of pipes; stdio only, nothing else inherited.
class StdioRank {
 public:
  StdioRank(const TempDir& dir, StdioPipes& pipes) : pipes_(&pipes) {
    std::string ready = dir / "rank.ready";
    pid_ = ::fork();
    if (pid_ == 0) {
      for (int i = 0; i < 3; i++) ::dup2(pipes.rank[i], i);
      ::close_range(3, ~0u, 0);
      ::setpgid(0, 0);
      ::execl(program("stdio_rank").c_str(), "stdio_rank", ready.c_str(), dir.path().c_str(), nullptr);
      ::_exit(127);
    }
    pipes.close_rank_ends();
    for (int i = 0; i < 2000 && !std::filesystem::exists(ready); i++) ::usleep(5000);
    EXPECT_TRUE(std::filesystem::exists(ready));
    ino_ = {pipes.ino(0), pipes.ino(1), pipes.ino(2)};
  }
  ~StdioRank() {
    if (pid_ > 0 && pid_exists(pid_)) ::kill(pid_, SIGKILL);
    if (pid_ > 0) wait_gone(pid_, 5000);
  }
  pid_t pid() const { return pid_; }
  // The dumped pipes: stdin, stdout, stderr.
  const std::vector<uint64_t>& inodes() const { return ino_; }
  // The rank talks on other pipes now (restored with stand-ins).
  void talk_on(StdioPipes& pipes) { pipes_ = &pipes; }

  // One question; the answer "K COUNT ok" (its stderr line read too, so
  // nothing the rank wrote stays queued).
  std::string ask(unsigned k) {
    say(pipes_->runtime[0], fmt::format("ask {}\n", k));
    return answer(k);
  }
  std::string answer(unsigned k) {
    std::string a = read_line(pipes_->runtime[1]);
    EXPECT_EQ(read_line(pipes_->runtime[2]), fmt::format("asked {}", k));
    return a;
  }
  void hold() {
    say(pipes_->runtime[0], "hold\n");
    EXPECT_EQ(read_line(pipes_->runtime[1]), "held");
  }
  int quit() {
    say(pipes_->runtime[0], "quit\n");
    int st = wait_pid(pid_).value_or(-1);
    pid_ = -1;
    return st;
  }
  // Killed by a dump: reaped here, the pid free for the restore.
  void reap_killed() {
    EXPECT_EQ(wait_pid(pid_).value_or(-1), 128 + SIGKILL);
    restored_pid_ = pid_;
    pid_ = -1;
  }
  void restored(pid_t pid) {
    EXPECT_EQ(pid, restored_pid_);
    pid_ = pid;
  }

 private:
  StdioPipes* pipes_;
  pid_t pid_ = -1;
  pid_t restored_pid_ = -1;
  std::vector<uint64_t> ino_;
};

std::vector<std::string> dump_args(pid_t pid, const std::string& images, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"dump", "-t", std::to_string(pid), "-D", images};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}


}  // namespace

TEST(ExternalPipe, RefusedByDefaultInOneLineNamingTheOptionsAndTheRankRunsOn) {
  TempDir dir;
  std::string images = images_dir(dir);
  StdioPipes pipes;
  StdioRank rank(dir, pipes);
  EXPECT_EQ(rank.ask(1), "1 0 ok");
  uint64_t in = rank.inodes()[0];
  auto refused = run_minicriu(dump_args(rank.pid(), images));
  expect_one_line_error(refused, fmt::format("pid {}: fd 0: pipe:[{}] is also held by pid {} (", rank.pid(), in,
                                             ::getpid()));
  for (auto needle : {fmt::format("--external pipe[{}]", in), std::string("--ext-pipes"),
                      fmt::format("--inherit-fd fd[N]:pipe:[{}]", in)})
    EXPECT_NE(refused.output.find(needle), std::string::npos) << refused.output;
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  EXPECT_EQ(rank.ask(2), "2 1 ok");

  // What the rank wrote to its stderr and we did not read yet is ours to
  // read: a dump cannot take it.
  say(pipes.runtime[0], "ask 3\n");
  EXPECT_EQ(read_line(pipes.runtime[1]), "3 2 ok");
  pollfd err{pipes.runtime[2], POLLIN, 0};
  ASSERT_EQ(::poll(&err, 1, 10000), 1);
  auto queued = run_minicriu(dump_args(rank.pid(), images, {"--ext-pipes"}));
  expect_one_line_error(queued, fmt::format("pid {}: fd 2: 8 byte(s) the tree wrote into pipe:[{}] are queued "
                                            "for a reader outside the tree", rank.pid(), rank.inodes()[2]));
  EXPECT_FALSE(std::filesystem::exists(images + "/inventory.img"));
  EXPECT_EQ(read_line(pipes.runtime[2]), "asked 3");
  EXPECT_EQ(rank.ask(4), "4 3 ok");
  EXPECT_EQ(rank.quit(), 0);
}

TEST(ExternalPipe, OneByInodeAndTheQuestionQueuedInStdinComesBackInTheStandIn) {
  TempDir dir;
  std::string images = images_dir(dir);
  StdioPipes pipes;
  StdioRank rank(dir, pipes);
  EXPECT_EQ(rank.ask(1), "1 0 ok");
  auto ino = rank.inodes();
  // One accepted, the others still refused.
  auto one = run_minicriu(dump_args(rank.pid(), images, {"--external", fmt::format("pipe[{}]", ino[0])}));
  EXPECT_EQ(one.status, 1) << one.output;
  EXPECT_EQ(one.output.find(fmt::format("pipe:[{}] is also held", ino[0])), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("is also held by pid"), std::string::npos) << one.output;
  // A question waits in the pipe, unread, at the dump.
  rank.hold();
  say(pipes.runtime[0], "ask 2\n");
  std::vector<std::string> accept;
  for (uint64_t i : ino) accept.insert(accept.end(), {"--external", fmt::format("pipe[{}]", i)});
  auto dumped = run_minicriu(dump_args(rank.pid(), images, accept));
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  rank.reap_killed();
  auto shown = run_minicriu({"show", "-D", images});
  EXPECT_NE(shown.output.find(fmt::format("pipe:[{}]: 6 bytes queued", ino[0])), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find(fmt::format("0: pipe:[{}] read end, external (pid {}", ino[0], ::getpid())),
            std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find(fmt::format("--inherit-fd fd[N]:pipe:[{}], N the write end", ino[1])),
            std::string::npos) << shown.output;

  StdioPipes fresh;
  RestoredTree tree;
  tree.add_from(images);
  std::vector<std::string> args{"restore", "-d", "-D", images};
  for (auto& a : fresh.inherit_args(ino)) args.push_back(a);
  auto restored = run_minicriu(args, fresh.rank_fds());
  ASSERT_EQ(restored.status, 0) << restored.output;
  rank.restored(restored_pid(restored));
  fresh.close_rank_ends();
  rank.talk_on(fresh);
  // Let go, it reads the question that was queued: from the new pipe.
  ::kill(rank.pid(), SIGUSR1);
  EXPECT_EQ(rank.answer(2), "2 1 ok");
  EXPECT_EQ(rank.ask(3), "3 2 ok");
  EXPECT_EQ(rank.quit(), 0);
}

TEST(ExternalPipe, ExtPipesAcceptsAllAndARestoreWithoutEveryStandInCreatesNothing) {
  TempDir dir;
  std::string images = images_dir(dir);
  StdioPipes pipes;
  StdioRank rank(dir, pipes);
  EXPECT_EQ(rank.ask(1), "1 0 ok");
  // Left running first: the rank goes on on its own pipes.
  auto kept = run_minicriu(dump_args(rank.pid(), images, {"--ext-pipes", "--leave-running"}));
  ASSERT_EQ(kept.status, 0) << kept.output;
  EXPECT_EQ(rank.ask(2), "2 1 ok");
  auto dumped = run_minicriu(dump_args(rank.pid(), images, {"--ext-pipes"}));
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  rank.reap_killed();
  auto ino = rank.inodes();
  pid_t pid = static_cast<pid_t>(show_json(images).inventory().root_pid());

  auto none = run_minicriu({"restore", "-d", "-D", images});
  expect_one_line_error(none, fmt::format("pipe:[{}] (the read end the tree held; pid {} (", ino[0], ::getpid()));
  EXPECT_NE(none.output.find(fmt::format("restore with --inherit-fd fd[N]:pipe:[{}]", ino[0])),
            std::string::npos) << none.output;
  EXPECT_FALSE(pid_exists(pid));

  StdioPipes fresh;
  auto two = run_minicriu({"restore", "-d", "-D", images, "--inherit-fd", fmt::format("fd[3]:pipe:[{}]", ino[0]),
                           "--inherit-fd", fmt::format("fd[4]:pipe:[{}]", ino[1])},
                          std::vector<int>{fresh.rank[0], fresh.rank[1]});
  expect_one_line_error(two, fmt::format("pipe:[{}] (the write end the tree held", ino[2]));
  EXPECT_FALSE(pid_exists(pid));
  // A read end cannot stand in for the write end the rank had.
  std::vector<std::string> wrong_args{"restore", "-d", "-D", images};
  for (auto& a : fresh.inherit_args(ino)) wrong_args.push_back(a);
  auto wrong = run_minicriu(wrong_args, std::vector<int>{fresh.rank[0], fresh.rank[0], fresh.rank[2]});
  expect_one_line_error(wrong, "what stands in for it is a read end; give the write end of a pipe");
  auto typo = run_minicriu({"restore", "-d", "-D", images, "--inherit-fd", fmt::format("fd[3]:pipe:[{}]", ino[0] + 7777)},
                           std::vector<int>{fresh.rank[0]});
  expect_one_line_error(typo, fmt::format("the images hold no external pipe:[{}]", ino[0] + 7777));
  EXPECT_FALSE(pid_exists(pid));

  RestoredTree tree;
  tree.add_from(images);
  std::vector<std::string> args{"restore", "-d", "-D", images};
  for (auto& a : fresh.inherit_args(ino)) args.push_back(a);
  auto restored = run_minicriu(args, fresh.rank_fds());
  ASSERT_EQ(restored.status, 0) << restored.output;
  rank.restored(restored_pid(restored));
  fresh.close_rank_ends();
  rank.talk_on(fresh);
  EXPECT_EQ(rank.ask(3), "3 2 ok");
  EXPECT_EQ(rank.quit(), 0);
}

namespace {

struct HookState {
  std::map<std::string, std::string> accepted;  // key -> type
  std::map<std::string, int> stand_in;          // key -> fd
  pid_t peer_pid = 0;
};

}  // namespace

// The runtime's way, through the C ABI: the dump hook accepts the rank's
// pipes (kind "pipe"), the restore hook hands in fresh ends.
TEST(ExternalPipe, TheLibraryHooksAcceptThePipesAndGiveTheirStandIns) {
  TempDir dir;
  std::string images = images_dir(dir);
  StdioPipes pipes;
  StdioRank rank(dir, pipes);
  EXPECT_EQ(rank.ask(1), "1 0 ok");
  // minicriu_dump_opts_set_ext_pipes, --ext-pipes' twin: the rank left
  // running goes on on its own pipes.
  minicriu_dump_opts* all = minicriu_dump_opts_new();
  ASSERT_EQ(minicriu_dump_opts_set_pid(all, rank.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(all, images.c_str()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_leave_running(all, 1), 0);
  ASSERT_EQ(minicriu_dump_opts_set_ext_pipes(all, 1), 0);
  ASSERT_EQ(minicriu_dump(all), 0) << minicriu_last_error();
  minicriu_dump_opts_free(all);
  EXPECT_EQ(rank.ask(2), "2 1 ok");
  HookState state;
  minicriu_dump_opts* d = minicriu_dump_opts_new();
  ASSERT_EQ(minicriu_dump_opts_set_pid(d, rank.pid()), 0);
  ASSERT_EQ(minicriu_dump_opts_set_images_dir(d, images.c_str()), 0);
  minicriu_external_dump_fn accept = [](const minicriu_external* obj, void* arg) -> int {
    auto* s = static_cast<HookState*>(arg);
    if (std::string(obj->kind) != "pipe") return 0;
    s->accepted[obj->key] = obj->type;
    s->peer_pid = obj->peer_pid;
    return 1;
  };
  ASSERT_EQ(minicriu_dump_opts_set_external_hook(d, accept, &state), 0);
  ASSERT_EQ(minicriu_dump(d), 0) << minicriu_last_error();
  minicriu_dump_opts_free(d);
  rank.reap_killed();
  auto ino = rank.inodes();
  EXPECT_EQ(state.accepted, (std::map<std::string, std::string>{{fmt::format("pipe:[{}]", ino[0]), "read"},
                                                                 {fmt::format("pipe:[{}]", ino[1]), "write"},
                                                                 {fmt::format("pipe:[{}]", ino[2]), "write"}}));
  EXPECT_EQ(state.peer_pid, ::getpid());

  StdioPipes fresh;
  for (int i = 0; i < 3; i++) state.stand_in[fmt::format("pipe:[{}]", ino[i])] = fresh.rank[i];
  RestoredTree tree;
  tree.add_from(images);
  minicriu_restore_opts* r = minicriu_restore_opts_new();
  ASSERT_EQ(minicriu_restore_opts_set_images_dir(r, images.c_str()), 0);
  ASSERT_EQ(minicriu_restore_opts_set_detach(r, 1), 0);
  minicriu_external_restore_fn give = [](const minicriu_external* obj, void* arg) -> int {
    auto* s = static_cast<HookState*>(arg);
    auto it = s->stand_in.find(obj->key);
    return it == s->stand_in.end() ? -1 : it->second;
  };
  ASSERT_EQ(minicriu_restore_opts_set_external_hook(r, give, &state), 0);
  pid_t pid = 0;
  ASSERT_EQ(minicriu_restore(r, &pid, nullptr), 0) << minicriu_last_error();
  minicriu_restore_opts_free(r);
  rank.restored(pid);
  fresh.close_rank_ends();
  rank.talk_on(fresh);
  EXPECT_EQ(rank.ask(3), "3 2 ok");
  EXPECT_EQ(rank.quit(), 0);
}

// A fifo the runtime keeps open: the rank's stdin is the fifo, and the stand-in
// the runtime gives at restore is the same fifo opened again. The question
// queued in it at the dump is still there (the runtime held the fifo all
// along), so it is not written a second time.
TEST(ExternalPipe, AFifoHeldOutsideComesBackOnTheSameFifoWithoutItsBytesTwice) {
  TempDir dir;
  std::string images = images_dir(dir);
  std::string path = dir / "rank.stdin";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  StdioPipes pipes;
  // The rank's stdin: the fifo's read end; ours: its write end.
  int fifo_rd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  int fifo_wr = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fifo_rd, 0);
  ASSERT_GE(fifo_wr, 0);
  ::fcntl(fifo_rd, F_SETFL, 0);
  ::close(pipes.rank[0]);
  ::close(pipes.runtime[0]);
  pipes.rank[0] = fifo_rd;
  pipes.runtime[0] = fifo_wr;
  StdioRank rank(dir, pipes);
  uint64_t fifo_ino = ino_of(fifo_wr);
  EXPECT_EQ(rank.ask(1), "1 0 ok");
  auto refused = run_minicriu(dump_args(rank.pid(), images, {"--external", fmt::format("pipe[{}]", rank.inodes()[1]),
                                                             "--external", fmt::format("pipe[{}]", rank.inodes()[2])}));
  expect_one_line_error(refused, fmt::format("pid {}: fd 0: {} is also held by pid {} (", rank.pid(), path, ::getpid()));
  EXPECT_NE(refused.output.find(fmt::format("--external pipe[{}]", fifo_ino)), std::string::npos) << refused.output;
  rank.hold();
  say(fifo_wr, "ask 2\n");
  auto dumped = run_minicriu(dump_args(rank.pid(), images, {"--ext-pipes"}));
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  rank.reap_killed();

  StdioPipes fresh;
  int again = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(again, 0);
  ::close(fresh.rank[0]);
  ::close(fresh.runtime[0]);
  fresh.rank[0] = again;
  fresh.runtime[0] = ::dup(fifo_wr);
  RestoredTree tree;
  tree.add_from(images);
  std::vector<std::string> args{"restore", "-d", "-D", images};
  for (auto& a : fresh.inherit_args({fifo_ino, rank.inodes()[1], rank.inodes()[2]})) args.push_back(a);
  auto restored = run_minicriu(args, fresh.rank_fds());
  ASSERT_EQ(restored.status, 0) << restored.output;
  rank.restored(restored_pid(restored));
  fresh.close_rank_ends();
  rank.talk_on(fresh);
  ::kill(rank.pid(), SIGUSR1);
  EXPECT_EQ(rank.answer(2), "2 1 ok");
  EXPECT_EQ(rank.ask(3), "3 2 ok");
  EXPECT_EQ(rank.quit(), 0);
  ::close(fifo_wr);
}
