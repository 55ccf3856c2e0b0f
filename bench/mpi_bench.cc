// MPI job benchmark: the acceptance tests' job (tests/mpi/mpi_ring.c, four
// ranks) checkpointed mid-run and restored, through the library, on one node
// with each BTL and over two nodes on this machine (network namespaces, as
// tests/e2e/two_node_test.cc) with a coordinated dump. Per run: the whole
// dump (the job killed at its end), how long the job was frozen, the size of
// its images, the restore until the job runs again, and the time until its
// rank 0 gets past the iteration of the dump; then the job must end
// with the answer of an undisturbed run, else the benchmark fails. Medians,
// and the range, of RUNS runs: the machine is noisy.
//
//   mpi_bench MINICRIU_BIN MPIRUN MPI_RING [RUNS=5] [DIR=/dev/shm]
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "minicriu/minicriu.hpp"
#include "mpi_job.hpp"  // tests/mpi

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kRanks = 4;
constexpr int kIterations = 300;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Figures {
  std::vector<double> dump_s, frozen_s, image_mib, restore_s, moving_s;
};

void die(const std::string& what) {
  std::fprintf(stderr, "mpi_bench: %s\n", what.c_str());
  std::exit(1);
}

// From the restore's return until rank 0 reports an iteration past the one
// it had reached at the dump: the job is at work again (over TCP, once the
// peers' retransmissions got through).
double until_moving(const std::string& dir, int at_dump) {
  auto t0 = Clock::now();
  if (!mpi_job::wait_progress(dir + "/progress", at_dump + 1, 60000)) die("the restored job made no progress");
  return seconds_since(t0);
}

uint64_t dir_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// Waits for pid (our child, or reparented to us: we are a subreaper), and
// reaps whatever else ended meanwhile.
int wait_for(pid_t pid) {
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(-1, &st, 0);
    if (r == pid) return st;
    if (r < 0 && errno != EINTR) return -1;
  }
}

void reap_all(const std::string& images) {
  auto view = minicriu::show({images, true});
  for (int i = 0; i < 500; i++) {
    int st;
    while (::waitpid(-1, &st, WNOHANG) > 0) {
    }
    bool any = false;
    // Every pid of the checkpoint free again (its JSON lists them as "pid": N).
    for (size_t at = 0; view && (at = view->find("\"pid\": ", at)) != std::string::npos; at += 7)
      any |= ::kill(std::atoi(view->c_str() + at + 7), 0) == 0;
    if (!any) return;
    ::usleep(10000);
  }
}

// mpirun (through argv) with stdio to files in dir, in a session of its own.
pid_t start(const std::vector<std::string>& argv, const std::string& dir) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open((dir + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open((dir + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0), ::dup2(out, 1), ::dup2(err, 2);
    ::close_range(3, ~0u, 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

void check_answer(pid_t root, const std::string& dir) {
  int st = wait_for(root);
  std::string out;
  if (FILE* f = std::fopen((dir + "/out").c_str(), "r")) {
    char buf[256] = {};
    if (std::fgets(buf, sizeof buf, f)) out = buf;
    std::fclose(f);
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || out != mpi_job::ring_answer(kRanks, kIterations) + "\n")
    die("the restored job did not end with the answer of an undisturbed run: " + out + " (see " + dir + "/err)");
}

void one_node_run(const std::string& mpirun, const std::string& ring, const std::string& btl,
                  const std::string& dir, Figures& f) {
  std::string images = dir + "/images";
  std::filesystem::create_directories(images);
  pid_t root = start({mpirun, "-np", std::to_string(kRanks), "--mca", "btl", btl, ring,
                      std::to_string(kIterations), dir + "/progress"}, dir);
  if (!mpi_job::wait_progress(dir + "/progress", 60)) die("the job made no progress");
  minicriu::DumpOptions d;
  d.pid = root;
  d.images_dir = images;
  auto t0 = Clock::now();
  auto stats = minicriu::dump(d);
  double dump_s = seconds_since(t0);
  if (!stats) die("dump: " + stats.error().what());
  wait_for(root);
  reap_all(images);
  int at_dump = mpi_job::progress(dir + "/progress");
  minicriu::RestoreOptions r;
  r.images_dir = images;
  r.detach = true;
  t0 = Clock::now();
  auto restored = minicriu::restore(r);
  double restore_s = seconds_since(t0);
  if (!restored) die("restore: " + restored.error().what());
  f.dump_s.push_back(dump_s);
  f.frozen_s.push_back(static_cast<double>(stats->frozen_ns) / 1e9);
  f.image_mib.push_back(static_cast<double>(dir_bytes(images)) / (1 << 20));
  f.restore_s.push_back(restore_s);
  f.moving_s.push_back(until_moving(dir, at_dump));
  check_answer(root, dir);
}

void two_node_run(const std::string& minicriu_bin, const std::string& mpirun, const std::string& ring,
                  const std::string& dir, Figures& f) {
  mpi_job::TwoNodes nodes(dir);
  if (!nodes.ok()) die("network namespaces cannot be made here: " + nodes.why());
  std::string images_a = dir + "/nodea", images_b = dir + "/nodeb";
  std::filesystem::create_directories(images_a);
  std::filesystem::create_directories(images_b);
  pid_t a = start({nodes.agent(), "nodea", nodes.mpirun_command(mpirun, ring, kRanks, kIterations, dir + "/progress")},
                  dir);
  if (!mpi_job::wait_progress(dir + "/progress", 60)) die("the two-node job made no progress");
  pid_t b = nodes.node_b_root();
  if (b <= 0) die("no orted on node B");
  minicriu::CoordinatedDumpOptions d;
  d.agent = {nodes.agent()};
  d.minicriu = minicriu_bin;
  d.nodes = {{"nodea", a, images_a}, {"nodeb", b, images_b}};
  d.dump_args = {"--tcp-established"};
  auto stats = minicriu::coordinated_dump(d);
  if (!stats) die("coordinated dump: " + stats.error().what());
  wait_for(a);
  reap_all(images_a);
  reap_all(images_b);
  int at_dump = mpi_job::progress(dir + "/progress");
  minicriu::CoordinatedRestoreOptions r;
  r.agent = d.agent;
  r.minicriu = minicriu_bin;
  r.nodes = {{"nodea", 0, images_a}, {"nodeb", 0, images_b}};
  auto restored = minicriu::coordinated_restore(r);
  if (!restored) die("coordinated restore: " + restored.error().what());
  f.dump_s.push_back(static_cast<double>(stats->total_ns) / 1e9);
  f.frozen_s.push_back(static_cast<double>(stats->frozen_ns) / 1e9);
  f.image_mib.push_back(static_cast<double>(dir_bytes(images_a) + dir_bytes(images_b)) / (1 << 20));
  f.restore_s.push_back(static_cast<double>(restored->total_ns) / 1e9);
  f.moving_s.push_back(until_moving(dir, at_dump));
  check_answer(a, dir);
}

std::string summary(std::vector<double> v, const char* unit) {
  std::sort(v.begin(), v.end());
  return fmt::format("{:.3f} {} ({:.3f}-{:.3f})", v[v.size() / 2], unit, v.front(), v.back());
}

void report(const std::string& name, const Figures& f) {
  std::printf("%s\n", name.c_str());
  std::printf("  checkpoint (dump, job killed at its end): %s\n", summary(f.dump_s, "s").c_str());
  std::printf("  job frozen:                               %s\n", summary(f.frozen_s, "s").c_str());
  std::printf("  image size:                               %s\n", summary(f.image_mib, "MiB").c_str());
  std::printf("  restore (until the job runs again):       %s\n", summary(f.restore_s, "s").c_str());
  std::printf("  then until rank 0 is at work again:       %s\n", summary(f.moving_s, "s").c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MINICRIU_BIN MPIRUN MPI_RING [RUNS=5] [DIR=/dev/shm]\n", argv[0]);
    return 2;
  }
  std::string minicriu_bin = argv[1], mpirun = argv[2], ring = argv[3];
  int runs = argc > 4 ? std::atoi(argv[4]) : 5;
  std::string base = argc > 5 ? argv[5] : "/dev/shm";
  // The ranks are reparented to us when mpirun dies: reaped here.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  auto fresh_dir = [&](const std::string& name, int run) {
    std::string dir = fmt::format("{}/mpi-bench-{}-{}-{}", base, ::getpid(), name, run);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
  };
  for (std::string btl : {"self,vader", "self,tcp"}) {
    Figures f;
    for (int i = 0; i < runs; i++) {
      std::string dir = fresh_dir(btl.substr(5), i);
      one_node_run(mpirun, ring, btl, dir, f);
      std::filesystem::remove_all(dir);
    }
    report(fmt::format("one node, mpirun -np {} --mca btl {} ({} runs)", kRanks, btl, runs), f);
  }
  Figures f;
  for (int i = 0; i < runs; i++) {
    std::string dir = fresh_dir("two-nodes", i);
    two_node_run(minicriu_bin, mpirun, ring, dir, f);
    std::filesystem::remove_all(dir);
  }
  report(fmt::format("two nodes (network namespaces), {} ranks, 2 a node, coordinated dump ({} runs)", kRanks, runs),
         f);
  return 0;
}
