// The acceptance test of the MPI use: a real Open MPI job of four ranks
// (mpirun and its ranks, talking over TCP, ptys, and shared memory with the
// vader BTL or TCP with the tcp BTL) checkpointed mid-run, killed, restored,
// checkpointed and restored again, and finishing with the same answer as an
// undisturbed run.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "e2e_util.hpp"
#include "mpi_job.hpp"  // tests/mpi

using namespace e2e;

#ifdef MPI_RING_BIN

namespace {

constexpr int kIterations = 400;
constexpr int kRanks = 4;

std::string expected_answer() { return mpi_job::ring_answer(kRanks, kIterations); }

// mpirun in a session of its own, the ranks' traffic over the given BTLs,
// stdio to files in dir.
pid_t start_job(const TempDir& dir, const std::string& btl) {
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
    ::execl(MPIRUN_BIN, "mpirun", "-np", ranks.c_str(), "--mca", "btl", btl.c_str(), MPI_RING_BIN,
            iterations.c_str(), progress.c_str(), nullptr);
    ::_exit(127);
  }
  return pid;
}

// TCP connections of the checkpoint whose two ends are held by ranks (not
// mpirun): the TCP BTL's.
int rank_to_rank_tcp(const minicriu::img::CheckpointView& view) {
  std::map<uint32_t, const minicriu::img::InetSocketFile*> by_id;
  for (auto& f : view.files())
    if (f.has_inet_sk() && f.inet_sk().state() == 1) by_id[f.id()] = &f.inet_sk();
  std::set<std::pair<std::string, uint32_t>> local, remote;
  for (auto& p : view.processes()) {
    if (p.core().comm() != "mpi_ring") continue;
    for (auto& fd : p.fds()) {
      auto it = by_id.find(fd.file_id());
      if (it == by_id.end()) continue;
      local.insert({it->second->local_addr(), it->second->local_port()});
      remote.insert({it->second->remote_addr(), it->second->remote_port()});
    }
  }
  int n = 0;
  for (auto& l : local) n += remote.count(l);
  return n;
}

class OpenMpi : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(OpenMpi, AFourRankJobEndsWithTheExpectedAnswerWithoutACheckpoint) {
  TempDir dir;
  pid_t pid = start_job(dir, GetParam());
  EXPECT_EQ(wait_pid(pid, 90000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), expected_answer() + "\n") << read_text(dir / "err");
}

// Dump (killing the job), restore, let it run, dump again, restore again:
// the job ends with the answer of an undisturbed run.
TEST_P(OpenMpi, AFourRankJobCheckpointedTwiceEndsWithTheSameAnswer) {
  TempDir dir;
  pid_t pid = start_job(dir, GetParam());
  RestoredTree tree;
  int resume_at = 60;
  for (int cycle = 0; cycle < 2; cycle++) {
    ASSERT_TRUE(mpi_job::wait_progress(dir / "progress", resume_at)) << read_text(dir / "err");
    std::string images = images_dir(dir, fmt::format("images{}", cycle));
    auto dumped = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images});
    ASSERT_EQ(dumped.status, 0) << dumped.output;
    EXPECT_EQ(wait_pid(pid), 128 + SIGKILL);
    auto view = show_json(images);
    EXPECT_EQ(view.processes_size(), 1 + kRanks);
    int between_ranks = rank_to_rank_tcp(view);
    if (GetParam() == "self,tcp") EXPECT_GT(between_ranks, 0) << "no TCP connection between ranks";
    else EXPECT_EQ(between_ranks, 0) << "ranks talk over TCP with the vader BTL";
    // The ranks were reparented to us when mpirun died: reaped, their pids free.
    for (auto& p : view.processes()) {
      reap_zombies();
      EXPECT_TRUE(wait_gone(static_cast<pid_t>(p.pstree().pid()))) << p.pstree().pid();
    }
    int at_dump = mpi_job::progress(dir / "progress");
    EXPECT_LT(at_dump, kIterations);
    tree.add_from(images);
    ASSERT_EQ(restore_detached(images), pid);
    resume_at = at_dump + 60;
  }
  EXPECT_EQ(wait_pid(pid, 90000), 0) << read_text(dir / "err");
  EXPECT_EQ(read_text(dir / "out"), expected_answer() + "\n") << read_text(dir / "err");
}

INSTANTIATE_TEST_SUITE_P(Btl, OpenMpi, ::testing::Values("self,vader", "self,tcp"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "self,vader" ? std::string("vader") : std::string("tcp");
                         });

#endif
