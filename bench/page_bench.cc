// Page-path benchmark: dump a process with SIZE of touched anonymous memory
// into /dev/shm, next to this machine's own limits measured in the same run:
// memcpy bandwidth and tmpfs write bandwidth for the same size.
//
//   page_bench [SIZE_MIB=1024] [RUNS=3] [DIR=/dev/shm]
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "minicriu/minicriu.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A child with `bytes` of touched anonymous memory, waiting.
pid_t start_target(size_t bytes) {
  int p[2];
  if (pipe(p) != 0) std::exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    auto* mem = static_cast<uint64_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (size_t i = 0; i < bytes / 8; i++) mem[i] = i * 0x9e3779b97f4a7c15ull;
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    // Closing the pipe (with everything else) tells the parent we are ready.
    close_range(3, ~0u, 0);
    for (;;) pause();
  }
  close(p[1]);
  // The child closes its pipe end with close_range once it is ready.
  char c;
  while (read(p[0], &c, 1) > 0) {
  }
  close(p[0]);
  return pid;
}

double memcpy_gbps(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  auto t = Clock::now();
  std::memcpy(b.data(), a.data(), bytes);
  double s = seconds_since(t);
  if (b[bytes / 2] != 1) std::abort();
  return static_cast<double>(bytes) / s / 1e9;
}

double tmpfs_write_gbps(const std::string& dir, size_t bytes) {
  std::string path = dir + "/page_bench.write";
  std::vector<char> buf(8 << 20, 3);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  auto t = Clock::now();
  for (size_t done = 0; done < bytes; done += buf.size())
    if (write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) std::abort();
  double s = seconds_since(t);
  close(fd);
  unlink(path.c_str());
  return static_cast<double>(bytes) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::string dir = argc > 3 ? argv[3] : "/dev/shm";
  size_t bytes = mib << 20;
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  std::vector<double> cp, wr, dump_s, frozen_s;
  uint64_t image_bytes = 0;
  for (int r = 0; r < runs; r++) {
    cp.push_back(memcpy_gbps(bytes));
    wr.push_back(tmpfs_write_gbps(dir, bytes));
    pid_t target = start_target(bytes);
    std::string images = dir + "/page_bench.images";
    std::filesystem::remove_all(images);
    std::filesystem::create_directory(images);
    minicriu::DumpOptions opts;
    opts.pid = target;
    opts.images_dir = images;
    opts.leave_running = true;
    auto stats = minicriu::dump(opts);
    if (!stats) {
      std::fprintf(stderr, "dump failed: %s\n", stats.error().what().c_str());
      kill(target, SIGKILL);
      return 1;
    }
    dump_s.push_back(static_cast<double>(stats->total_ns) / 1e9);
    frozen_s.push_back(static_cast<double>(stats->frozen_ns) / 1e9);
    image_bytes = 0;
    for (auto& e : std::filesystem::directory_iterator(images)) image_bytes += e.file_size();
    kill(target, SIGKILL);
    waitpid(target, nullptr, 0);
    std::filesystem::remove_all(images);
  }
  double gb = static_cast<double>(bytes) / 1e9;
  double dump_gbps = gb / median(dump_s);
  std::printf("| what | median of %d runs |\n|---|---|\n", runs);
  std::printf("| process memory (touched, anonymous) | %zu MiB |\n", mib);
  std::printf("| memcpy | %.2f GB/s |\n", median(cp));
  std::printf("| tmpfs write() (%s) | %.2f GB/s |\n", dir.c_str(), median(wr));
  std::printf("| dump, whole (`--leave-running`) | %.3f s = %.2f GB/s |\n", median(dump_s), dump_gbps);
  std::printf("| application frozen | %.3f s |\n", median(frozen_s));
  std::printf("| image size | %.1f MiB (%.3f of the memory) |\n",
              static_cast<double>(image_bytes) / (1 << 20), static_cast<double>(image_bytes) / bytes);
  std::printf("| dump / memcpy | %.2f |\n", dump_gbps / median(cp));
  std::printf("| dump / tmpfs write | %.2f |\n", dump_gbps / median(wr));
  return 0;
}
