// Anonymous-inode fds on a real process: eventfd, timerfd, signalfd, an epoll
// over two of them, a pidfd into the tree and an inotify are dumped with their state (as
// `show --json` decodes it), and the process, left running, finds every object
// as it left it. A pidfd to a process outside the tree is refused in one line.
#include <google/protobuf/util/json_util.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>

#include <filesystem>
#include <map>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;
namespace img = minicriu::img;

namespace {

const img::FileEntry* file(const img::CheckpointView& view, uint32_t id) {
  for (auto& f : view.files())
    if (f.id() == id) return &f;
  return nullptr;
}

}  // namespace

TEST(AnonFds, ProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("anonfds", dir);
  ASSERT_TRUE(p.wait_ready());
  ::usleep(150 * 1000);
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(AnonFds, LeaveRunningDumpRecordsEachObjectAndChangesNone) {
  TempDir dir;
  std::string images = dir / "images";
  std::filesystem::create_directory(images);
  Program p("anonfds", dir);
  ASSERT_TRUE(p.wait_ready());
  ::usleep(120 * 1000);  // past the timer's first expiry (50 ms), so it holds ticks
  auto r = run_minicriu({"-v", "dump", "-t", std::to_string(p.pid()), "-D", images, "--leave-running"});
  ASSERT_EQ(r.status, 0) << r.output;

  auto json = run_minicriu({"show", "--json", "-D", images});
  ASSERT_EQ(json.status, 0) << json.output;
  img::CheckpointView view;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.output, &view).ok()) << json.output;
  ASSERT_EQ(view.processes_size(), 2) << "the program and its child";
  const auto& proc = view.processes(0);
  ASSERT_EQ(proc.pstree().pid(), static_cast<uint32_t>(p.pid()));
  pid_t child = static_cast<pid_t>(view.processes(1).pstree().pid());

  // Each kind once among the program's fds; fd number -> its file.
  std::map<int, const img::FileEntry*> by_fd;
  std::map<img::FileEntry::KindCase, int> fd_of;
  for (auto& fd : proc.fds()) {
    const img::FileEntry* f = file(view, fd.file_id());
    ASSERT_NE(f, nullptr) << "fd " << fd.fd();
    by_fd[fd.fd()] = f;
    fd_of[f->kind_case()] = fd.fd();
  }
  for (auto kind : {img::FileEntry::kEventfd, img::FileEntry::kTimerfd, img::FileEntry::kSignalfd,
                    img::FileEntry::kEpoll, img::FileEntry::kPidfd, img::FileEntry::kInotify})
    ASSERT_TRUE(fd_of.count(kind)) << "no fd of kind " << kind << " in\n" << json.output;

  const auto& e = by_fd[fd_of[img::FileEntry::kEventfd]]->eventfd();
  EXPECT_EQ(e.count(), 5u);
  EXPECT_FALSE(e.semaphore());
  EXPECT_TRUE(e.flags() & O_NONBLOCK);

  const auto& t = by_fd[fd_of[img::FileEntry::kTimerfd]]->timerfd();
  EXPECT_EQ(t.clockid(), static_cast<uint32_t>(CLOCK_MONOTONIC));
  EXPECT_EQ(t.settime_flags(), 0u);
  EXPECT_EQ(t.interval_ns(), 100'000'000u);
  EXPECT_GT(t.remaining_ns(), 0u);
  EXPECT_LE(t.remaining_ns(), 100'000'000u);
  EXPECT_GE(t.ticks(), 1u) << "the timer fired since the program armed it";

  EXPECT_EQ(by_fd[fd_of[img::FileEntry::kSignalfd]]->signalfd().mask(), 1ull << (SIGUSR2 - 1));
  EXPECT_EQ(by_fd[fd_of[img::FileEntry::kPidfd]]->pidfd().pid(), static_cast<uint32_t>(child));

  const auto& in = by_fd[fd_of[img::FileEntry::kInotify]]->inotify();
  ASSERT_EQ(in.watches_size(), 1);
  EXPECT_EQ(in.watches(0).wd(), 2);
  EXPECT_EQ(in.watches(0).path(), dir.path());
  EXPECT_EQ(in.watches(0).mask(), static_cast<uint32_t>(IN_CREATE));

  const auto& ep = by_fd[fd_of[img::FileEntry::kEpoll]]->epoll();
  ASSERT_EQ(ep.targets_size(), 3);
  std::map<img::FileEntry::KindCase, const img::EpollTarget*> target_of;
  for (auto& target : ep.targets()) {
    ASSERT_TRUE(by_fd.count(target.fd())) << "epoll target fd " << target.fd() << " is not in the fd table";
    target_of[by_fd[target.fd()]->kind_case()] = &target;
  }
  ASSERT_TRUE(target_of.count(img::FileEntry::kEventfd) && target_of.count(img::FileEntry::kTimerfd) &&
              target_of.count(img::FileEntry::kPipe));
  EXPECT_EQ(target_of[img::FileEntry::kPipe]->data(), 0x9191u);
  EXPECT_EQ(target_of[img::FileEntry::kEventfd]->data(), 0xE1E1E1E1E1ull);
  EXPECT_EQ(target_of[img::FileEntry::kTimerfd]->data(), 0x7171u);
  EXPECT_TRUE(target_of[img::FileEntry::kEventfd]->events() & EPOLLIN);

  auto shown = run_minicriu({"show", "-D", images});
  ASSERT_EQ(shown.status, 0) << shown.output;
  for (const char* line : {"eventfd (count 5", "timerfd (clock 1, relative", "signalfd (mask 0x800",
                           "epoll (3 target(s): fd ", "pidfd (pid ", "inotify (1 watch(es): wd 2 "})
    EXPECT_NE(shown.output.find(line), std::string::npos) << line << " not in\n" << shown.output;

  // The dump read fdinfo only: the count, the queued signal and the timer are
  // all still there for the program.
  expect_intact(p);
}

TEST(AnonFds, PidfdOutsideTheTreeIsRefusedInOneLineAndTargetLeftIntact) {
  TempDir dir;
  Program p("anonfds", dir, {"pidfd-outside"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir.path()});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("minicriu: error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is a pidfd to pid " + std::to_string(::getpid()) + ", which is outside the dumped tree"),
            std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "inventory.img"));
  expect_intact(p);
}
