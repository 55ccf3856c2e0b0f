// Page-path benchmark: dump a process with SIZE of touched anonymous memory
// into /dev/shm and restore it, next to this machine's own limits measured in
// the same run: memcpy bandwidth, tmpfs write() and read() bandwidth for the
// same size.
//
// Each run starts a fresh target (bench/page_target.c), dumps it with
// leave_running (the dump figures), dumps it again killing it, makes sure it
// is reaped, restores it detached (the restore figures), and has the restored
// process check its whole memory pattern itself: a restore that lost or
// damaged a page fails the benchmark.
//
//   page_bench [huge] [SIZE_MIB=1024] [RUNS=3] [DIR=/dev/shm]
//
// With "huge", the target's memory has MADV_HUGEPAGE (transparent huge pages,
// which the restore gives back).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "minicriu/minicriu.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;
using bench::start_target;
using bench::wait_exit;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double memcpy_gbps(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  auto t = Clock::now();
  std::memcpy(b.data(), a.data(), bytes);
  double s = seconds_since(t);
  if (b[bytes / 2] != 1) std::abort();
  return static_cast<double>(bytes) / s / 1e9;
}

// Writes `path` (left in place for the read figures).
double tmpfs_write_gbps(const std::string& path, size_t bytes) {
  std::vector<char> buf(8 << 20, 3);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  auto t = Clock::now();
  for (size_t done = 0; done < bytes; done += buf.size())
    if (write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) std::abort();
  double s = seconds_since(t);
  close(fd);
  return static_cast<double>(bytes) / s / 1e9;
}

// Reads `path` with large read()s into fresh anonymous memory of the same
// size: the work a restore does with its pages (fault in, zero, copy), so the
// bound to compare it with. With `threads`, each reads its own contiguous
// part with pread(), as the restore's page readers do.
// With huge, the memory has MADV_HUGEPAGE.
double tmpfs_read_gbps(const std::string& path, size_t bytes, unsigned threads = 1, bool huge = false) {
  int fd = open(path.c_str(), O_RDONLY);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fd < 0 || mem == MAP_FAILED) std::abort();
  if (huge) madvise(mem, bytes, MADV_HUGEPAGE);
  auto* dst = static_cast<char*>(mem);
  auto read_part = [&](size_t from, size_t to) {
    for (size_t done = from; done < to;) {
      ssize_t n = pread(fd, dst + done, to - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  };
  size_t part = (bytes / threads) & ~size_t{4095};
  auto t = Clock::now();
  std::vector<std::thread> others;
  for (unsigned k = 1; k < threads; k++)
    others.emplace_back(read_part, k * part, k + 1 == threads ? bytes : (k + 1) * part);
  read_part(0, threads > 1 ? part : bytes);
  for (auto& o : others) o.join();
  double s = seconds_since(t);
  if (dst[bytes / 2] != 3) std::abort();
  munmap(mem, bytes);
  close(fd);
  return static_cast<double>(bytes) / s / 1e9;
}

// The threads a restore reads pages with here (restorer/page_fill.cc: the
// CPUs it may run on, at most 4).
unsigned reader_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  unsigned n = sched_getaffinity(0, sizeof(set), &set) == 0 ? static_cast<unsigned>(CPU_COUNT(&set)) : 1;
  return std::clamp(n, 1u, 4u);
}

// AnonHugePages of pid (smaps_rollup), in MiB.
uint64_t anon_huge_mib(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/smaps_rollup").c_str(), "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "AnonHugePages: %llu kB", &kb) == 1) break;
  std::fclose(f);
  return kb >> 10;
}

}  // namespace

// A dump of pid through the library into a fresh images directory.
minicriu::Result<minicriu::DumpStats> dump_into(pid_t pid, const std::string& images, bool leave_running) {
  std::filesystem::remove_all(images);
  std::filesystem::create_directory(images);
  minicriu::DumpOptions opts;
  opts.pid = pid;
  opts.images_dir = images;
  opts.leave_running = leave_running;
  return minicriu::dump(opts);
}

// page_bench ghost [SIZE_MIB=64] [RUNS=5] [DIR=/dev/shm]: the dump of a
// process whose memory is an unlinked shared file (an MPI pool: a ghost file,
// stored once, sparse) against one with as much anonymous memory.
int ghost_main(int argc, char** argv) {
  size_t mib = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 64;
  int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  std::string dir = argc > 4 ? argv[4] : "/dev/shm";
  std::string images = dir + "/page_bench.ghost.images";
  std::vector<double> plain_s, ghost_s;
  uint64_t plain_bytes = 0, ghost_bytes = 0;
  for (int r = 0; r < runs; r++) {
    for (bool ghost : {false, true}) {
      pid_t target = start_target(mib, ghost ? dir : "");
      auto stats = dump_into(target, images, true);
      kill(target, SIGKILL);
      waitpid(target, nullptr, 0);
      if (!stats) {
        std::fprintf(stderr, "dump failed: %s\n", stats.error().what().c_str());
        return 1;
      }
      uint64_t bytes = 0;
      for (auto& e : std::filesystem::directory_iterator(images)) bytes += e.file_size();
      (ghost ? ghost_s : plain_s).push_back(static_cast<double>(stats->total_ns) / 1e9);
      (ghost ? ghost_bytes : plain_bytes) = bytes;
    }
  }
  std::filesystem::remove_all(images);
  double gb = static_cast<double>(mib << 20) / 1e9;
  std::printf("| %zu MiB, median of %d runs | dump | GB/s | image |\n|---|---|---|---|\n", mib, runs);
  std::printf("| anonymous private memory | %.4f s | %.2f | %.1f MiB |\n", median(plain_s),
              gb / median(plain_s), static_cast<double>(plain_bytes) / (1 << 20));
  std::printf("| unlinked shared file (ghost) | %.4f s | %.2f | %.1f MiB |\n", median(ghost_s),
              gb / median(ghost_s), static_cast<double>(ghost_bytes) / (1 << 20));
  std::printf("| ghost / anonymous time | %.2f | | |\n", median(ghost_s) / median(plain_s));
  return 0;
}

int main(int argc, char** argv) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (argc > 1 && std::string(argv[1]) == "ghost") return ghost_main(argc, argv);
  // page_bench huge ...: the target's memory has MADV_HUGEPAGE (THP).
  bool huge = argc > 1 && std::string(argv[1]) == "huge";
  if (huge) {
    argc--;
    argv++;
  }
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::string dir = argc > 3 ? argv[3] : "/dev/shm";
  size_t bytes = mib << 20;
  // Restored processes are our children too; as a subreaper we also reap
  // anything a target might leave behind.
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  std::vector<double> cp, wr, rd, rdn, dump_s, frozen_s, kill_dump_s, restore_s, down_s;
  uint64_t image_bytes = 0;
  uint64_t huge_before = 0, huge_after = 0;  // AnonHugePages of the last run's target, restored
  std::string images = dir + "/page_bench.images";
  auto fail = [&](const char* what, const std::string& why, pid_t pid) {
    std::fprintf(stderr, "%s: %s\n", what, why.c_str());
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    std::filesystem::remove_all(images);
    return 1;
  };
  unsigned readers = reader_threads();
  for (int r = 0; r < runs; r++) {
    cp.push_back(memcpy_gbps(bytes));
    std::string file = dir + "/page_bench.file";
    wr.push_back(tmpfs_write_gbps(file, bytes));
    rd.push_back(tmpfs_read_gbps(file, bytes, 1, huge));
    rdn.push_back(tmpfs_read_gbps(file, bytes, readers, huge));
    unlink(file.c_str());

    pid_t target = start_target(mib, "", huge);
    huge_before = anon_huge_mib(target);
    auto stats = dump_into(target, images, true);
    if (!stats) return fail("dump failed", stats.error().what(), target);
    dump_s.push_back(static_cast<double>(stats->total_ns) / 1e9);
    frozen_s.push_back(static_cast<double>(stats->frozen_ns) / 1e9);
    image_bytes = 0;
    for (auto& e : std::filesystem::directory_iterator(images)) image_bytes += e.file_size();

    // Again, killing the target this time: the images to restore from. The
    // target is our child: the dump leaves its exit for us to reap.
    auto killed = dump_into(target, images, false);
    if (!killed) return fail("dump (killing the target) failed", killed.error().what(), target);
    int status = wait_exit(target, 10);
    if (!(status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
      return fail("dump", "the target was not killed by the dump", target);

    minicriu::RestoreOptions ropts;
    ropts.images_dir = images;
    ropts.detach = true;
    auto t = Clock::now();
    auto restored = minicriu::restore(ropts);
    double restore_time = seconds_since(t);
    if (!restored) return fail("restore failed", restored.error().what(), -1);
    pid_t pid = restored->root_pid;
    if (pid != target) return fail("restore", "the restored pid is not the dumped one", pid);
    kill_dump_s.push_back(static_cast<double>(killed->total_ns) / 1e9);
    restore_s.push_back(restore_time);
    // What a move of the process costs it: from the freeze of the killing dump
    // to the restored process running (the time between the two is ours).
    down_s.push_back(static_cast<double>(killed->frozen_ns) / 1e9 + restore_time);
    huge_after = anon_huge_mib(pid);
    // The restored process checks its whole memory and exits 0 if intact.
    kill(pid, SIGUSR1);
    status = wait_exit(pid, 60);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return fail("restore", "the restored process did not find its memory intact", -1);
    std::filesystem::remove_all(images);
  }
  double gb = static_cast<double>(bytes) / 1e9;
  double dump_gbps = gb / median(dump_s);
  double restore_gbps = gb / median(restore_s);
  std::printf("| what | median of %d runs |\n|---|---|\n", runs);
  std::printf("| process memory (touched, anonymous%s) | %zu MiB |\n", huge ? ", MADV_HUGEPAGE" : "", mib);
  if (huge) std::printf("| AnonHugePages, dumped / restored | %llu / %llu MiB |\n",
                       static_cast<unsigned long long>(huge_before), static_cast<unsigned long long>(huge_after));
  std::printf("| memcpy | %.2f GB/s |\n", median(cp));
  std::printf("| tmpfs write() (%s) | %.2f GB/s |\n", dir.c_str(), median(wr));
  std::printf("| tmpfs read() into fresh memory | %.2f GB/s |\n", median(rd));
  std::printf("| tmpfs read() into fresh memory, %u threads | %.2f GB/s |\n", readers, median(rdn));
  std::printf("| dump, whole (`--leave-running`) | %.3f s = %.2f GB/s |\n", median(dump_s), dump_gbps);
  std::printf("| application frozen | %.3f s |\n", median(frozen_s));
  std::printf("| image size | %.1f MiB (%.3f of the memory) |\n",
              static_cast<double>(image_bytes) / (1 << 20), static_cast<double>(image_bytes) / bytes);
  std::printf("| dump, whole (target killed) | %.3f s |\n", median(kill_dump_s));
  std::printf("| restore, whole (detached; memory checked after) | %.3f s = %.2f GB/s |\n",
              median(restore_s), restore_gbps);
  std::printf("| down time: killing dump frozen + restore | %.3f s |\n", median(down_s));
  std::printf("| dump / memcpy | %.2f |\n", dump_gbps / median(cp));
  std::printf("| dump / tmpfs write | %.2f |\n", dump_gbps / median(wr));
  std::printf("| restore / memcpy | %.2f |\n", restore_gbps / median(cp));
  std::printf("| restore / tmpfs read | %.2f |\n", restore_gbps / median(rd));
  std::printf("| restore / tmpfs read, %u threads | %.2f |\n", readers, restore_gbps / median(rdn));
  return 0;
}
