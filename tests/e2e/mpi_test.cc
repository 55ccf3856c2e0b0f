// The acceptance test of the MPI use: a real Open MPI job (mpirun and its
// ranks, talking over TCP, shared memory and ptys) checkpointed mid-run,
// killed, restored, and finishing with the same answer as an undisturbed run.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "e2e_util.hpp"

using namespace e2e;

#ifdef MPI_RING_BIN

namespace {

constexpr int kIterations = 600;
constexpr int kRanks = 2;

std::string expected_answer() {
  // Sum over iterations and ranks of (rank+1)(it+1)/2, and the tokens: each
  // iteration's token comes back as it + 1 + ... + (ranks-1).
  double total = 0.5 * (kRanks * (kRanks + 1) / 2) * (kIterations * (kIterations + 1) / 2.0);
  long tokens = static_cast<long>(kIterations) * (kIterations - 1) / 2 +
                static_cast<long>(kIterations) * (kRanks * (kRanks - 1) / 2);
  return fmt::format("answer {:.1f} tokens {}", total, tokens);
}

// mpirun in a session of its own, stdio to files in dir.
pid_t start_job(const TempDir& dir) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open((dir / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::close_range(3, ~0u, 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    std::string iterations = std::to_string(kIterations);
    std::string ranks = std::to_string(kRanks);
    std::string progress = dir / "progress";
    ::execl(MPIRUN_BIN, "mpirun", "-np", ranks.c_str(), MPI_RING_BIN, iterations.c_str(),
            progress.c_str(), nullptr);
    ::_exit(127);
  }
  return pid;
}

int progress_of(const TempDir& dir) {
  std::ifstream in(dir / "progress");
  int it = 0;
  in >> it;
  return it;
}

}  // namespace

TEST(OpenMpi, AJobEndsWithTheExpectedAnswerWithoutACheckpoint) {
  TempDir dir;
  pid_t pid = start_job(dir);
  EXPECT_EQ(wait_pid(pid, 60000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), expected_answer() + "\n");
}

TEST(OpenMpi, AJobCheckpointedMidRunEndsWithTheSameAnswer) {
  TempDir dir;
  std::string images = images_dir(dir);
  pid_t pid = start_job(dir);
  for (int i = 0; i < 3000 && progress_of(dir) < 100; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  int before = progress_of(dir);
  ASSERT_GE(before, 100) << read_text(dir / "err");
  auto dumped = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images});
  ASSERT_EQ(dumped.status, 0) << dumped.output;
  EXPECT_EQ(wait_pid(pid), 128 + SIGKILL);
  auto view = show_json(images);
  std::vector<pid_t> pids;
  for (auto& p : view.processes()) pids.push_back(static_cast<pid_t>(p.pstree().pid()));
  EXPECT_EQ(pids.size(), 1u + kRanks);
  // The ranks were reparented to us when mpirun died: reap them.
  for (pid_t p : pids) {
    reap_zombies();
    EXPECT_TRUE(wait_gone(p)) << p;
  }
  int at_dump = progress_of(dir);
  RestoredTree tree;
  tree.add_from(images);
  auto restored = run_minicriu({"restore", "-d", "-D", images});
  ASSERT_EQ(restored.status, 0) << restored.output;
  EXPECT_EQ(std::stoi(restored.output), pid);
  EXPECT_EQ(wait_pid(pid, 60000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), expected_answer() + "\n") << read_text(dir / "err");
  EXPECT_LT(at_dump, kIterations);
}

#endif
