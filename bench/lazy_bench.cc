// Lazy restore against eager: the time from the restore() call to the
// restored process's first instructions, and to its last page in, for a
// process with SIZE of known anonymous memory (tests/programs/lazy.c, built
// here as lazy_target).
//
// The target ticks every millisecond in a thread of its own and writes the
// CLOCK_REALTIME time of its first tick after a gap (the dump, the restore)
// to DIR/lazy.stamp: that is its first instruction after the restore. The
// last page is in when the detached lazy pager exits (it is our child: we
// are a subreaper); an eager restore has every page in before the tree runs.
// Each run then has the target verify every word of its memory itself: a
// restore that lost a page fails the benchmark.
//
// MODE shm: the target is a parent and its child sharing SIZE of
// MAP_SHARED|MAP_ANONYMOUS memory, a 32 MiB memfd and a 16 MiB System V
// segment (tests/programs/lazyshm.c, built as lazyshm_target), all of it
// verified by both.
//
//   lazy_bench [SIZES_MIB=256,1024,4096] [RUNS=3] [DIR=/dev/shm] [MODE=anon|shm]
#include <fcntl.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "minicriu/minicriu.hpp"

namespace {

double now_realtime() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "lazy_bench: %s\n", why.c_str());
  std::exit(1);
}

bool shm_mode = false;

pid_t start_target(const std::string& dir, size_t mib) {
  const std::string target = (std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                              (shm_mode ? "lazyshm_target" : "lazy_target")).string();
  std::string ready = dir + "/ready";
  pid_t pid = fork();
  if (pid == 0) {
    // Its stdio is its own: a pipe of whoever runs us (ctest) would be
    // outside the dumped tree.
    int null = open("/dev/null", O_RDWR);
    int log = open((dir + "/target.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(null, 0);
    dup2(null, 1);
    dup2(log >= 0 ? log : null, 2);
    close_range(3, ~0u, 0);  // nothing of ours: the dump would find it outside the tree
    if (shm_mode)
      execl(target.c_str(), target.c_str(), ready.c_str(), dir.c_str(), std::to_string(mib).c_str(), nullptr);
    else
      execl(target.c_str(), target.c_str(), ready.c_str(), dir.c_str(), std::to_string(mib).c_str(), "1", nullptr);
    _exit(127);
  }
  while (!std::filesystem::exists(ready)) {
    if (waitpid(pid, nullptr, WNOHANG) != 0) die(target + " did not start");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pid;
}

struct Times {
  double first_ms, last_ms;
};

Times one_run(const std::string& base, size_t mib, bool lazy) {
  std::string dir = base + "/run";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/images");
  pid_t pid = start_target(dir, mib);
  minicriu::DumpOptions d;
  d.pid = pid;
  d.images_dir = dir + "/images";
  if (auto r = minicriu::dump(d); !r) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    die("dump: " + r.error().what());
  }
  int st;
  if (waitpid(pid, &st, 0) != pid) die("the dumped target was not reaped");
  // Its child (shm), killed with it and reparented to us: reaped too, or
  // its pid is not free for the restore.
  for (int i = 0; i < 20; i++, std::this_thread::sleep_for(std::chrono::milliseconds(10)))
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the gap the target sees is the restore's
  std::string stamp = dir + "/lazy.stamp";
  std::filesystem::remove(stamp);  // a hiccup before the dump (a loaded machine) may have written one
  minicriu::RestoreOptions r;
  r.images_dir = d.images_dir;
  r.detach = true;
  r.lazy = lazy;
  double t0 = now_realtime();
  auto res = minicriu::restore(r);
  double returned = now_realtime();
  if (!res) die("restore: " + res.error().what());
  for (int i = 0; !std::filesystem::exists(stamp) || std::filesystem::file_size(stamp) == 0; i++) {
    if (i > 30000) die("the restored target wrote no time stamp");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  double first = 0;
  std::ifstream(stamp) >> first;
  double last = lazy ? 0 : returned;
  if (lazy) {  // the detached pager: our only child but the target
    for (;;) {
      pid_t c = waitpid(-1, &st, 0);
      if (c < 0) die("the lazy pager was not seen to exit");
      if (c == pid) die("the restored target exited before the pager");
      last = now_realtime();
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("the lazy pager failed");
      break;
    }
  }
  kill(pid, SIGUSR1);
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("the restored target found its memory damaged");
  std::filesystem::remove_all(dir);
  return {(first - t0) * 1e3, (std::max(last, first) - t0) * 1e3};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {256, 1024, 4096};
  if (argc > 1) {
    sizes.clear();
    std::stringstream in(argv[1]);
    for (std::string s; std::getline(in, s, ',');) sizes.push_back(std::stoul(s));
  }
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::string base = argc > 3 ? argv[3] : "/dev/shm";
  shm_mode = argc > 4 && std::string(argv[4]) == "shm";
  base += "/minicriu-lazy-bench-" + std::to_string(getpid());
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("%-8s %-6s %18s %18s   (medians of %d runs, ms from the restore() call)\n", "size", "mode",
              "first instruction", "last page in", runs);
  for (size_t mib : sizes) {
    for (bool lazy : {false, true}) {
      std::vector<double> first, last;
      for (int i = 0; i < runs; i++) {
        Times t = one_run(base, mib, lazy);
        first.push_back(t.first_ms);
        last.push_back(t.last_ms);
      }
      std::printf("%-8s %-6s %18.1f %18.1f\n", (std::to_string(mib) + (shm_mode ? "M shm" : "M")).c_str(),
                  lazy ? "lazy" : "eager",
                  median(first), median(last));
      std::fflush(stdout);
    }
  }
  std::filesystem::remove_all(base);
  return 0;
}
