// Pipes at dump: every end recorded, queued bytes carried without consuming
// them, and a pipe shared with a process outside the tree refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(PipeDump, DataInFlightIsCarriedAndNotConsumed) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("pipes", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.pipes_size(), 3);
  std::multiset<uint64_t> queued;
  for (auto& pd : view.pipes()) queued.insert(pd.bytes());
  EXPECT_EQ(queued, (std::multiset<uint64_t>{0, 30000, 65536}));
  EXPECT_EQ(std::filesystem::file_size(images + "/pipes-data.img"), 30000u + 65536u);
  int ends = 0;
  for (auto& f : view.files()) ends += f.has_pipe();
  EXPECT_EQ(ends, 6) << "three pipes, two ends each";
  expect_intact(p);
}

TEST(PipeDump, APipeSharedWithAProcessOutsideTheTreeIsRefused) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // The program inherits the read end as fd 0; we keep the write end.
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[0], 0);
    ::close_range(1, ~0u, 0);
    ::execl(program("basic").c_str(), "basic", (dir / "ready").c_str(), dir.path().c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[0]);
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir / "ready"); i++) ::usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(dir / "ready"));
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", dir.path()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("pid " + std::to_string(pid) + ": fd 0: pipe:["), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is also held by pid " + std::to_string(::getpid())), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
  ::close(fds[1]);
}
