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
//   page_bench [SIZE_MIB=1024] [RUNS=3] [DIR=/dev/shm]
#include <fcntl.h>
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

// bench/page_target.c, built next to us, with `mib` of touched memory; it
// closes its end of a pipe when ready.
// With ghost_dir, its memory is an unlinked file of that directory, shared.
pid_t start_target(size_t mib, const std::string& ghost_dir = "") {
  static const std::string target =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "page_target").string();
  std::string arg = std::to_string(mib);
  int p[2];
  if (pipe(p) != 0) std::exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    // Out of the way of the fds the target opens itself.
    dup2(p[1], 100);
    close(p[1]);
    if (ghost_dir.empty())
      execl(target.c_str(), target.c_str(), arg.c_str(), nullptr);
    else
      execl(target.c_str(), target.c_str(), arg.c_str(), "ghost", ghost_dir.c_str(), nullptr);
    _exit(127);
  }
  close(p[1]);
  char c;
  while (read(p[0], &c, 1) > 0) {
  }
  close(p[0]);
  int status;
  if (waitpid(pid, &status, WNOHANG) != 0) {
    std::fprintf(stderr, "%s did not start\n", target.c_str());
    std::exit(1);
  }
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
// bound to compare it with.
double tmpfs_read_gbps(const std::string& path, size_t bytes) {
  int fd = open(path.c_str(), O_RDONLY);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fd < 0 || mem == MAP_FAILED) std::abort();
  auto* dst = static_cast<char*>(mem);
  auto t = Clock::now();
  for (size_t done = 0; done < bytes;) {
    ssize_t n = read(fd, dst + done, bytes - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  double s = seconds_since(t);
  if (dst[bytes / 2] != 3) std::abort();
  munmap(mem, bytes);
  close(fd);
  return static_cast<double>(bytes) / s / 1e9;
}

// Waits up to `timeout_s` for `pid` to end and returns its wait status; kills
// it if it does not end. -1 with errno from waitpid if it is not our child.
int wait_exit(pid_t pid, double timeout_s) {
  auto t = Clock::now();
  int status = 0;
  for (;;) {
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) return status;
    if (got < 0) return -1;
    if (seconds_since(t) > timeout_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      errno = ETIMEDOUT;
      return -1;
    }
    usleep(1000);
  }
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
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::string dir = argc > 3 ? argv[3] : "/dev/shm";
  size_t bytes = mib << 20;
  // Restored processes are our children too; as a subreaper we also reap
  // anything a target might leave behind.
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  std::vector<double> cp, wr, rd, dump_s, frozen_s, kill_dump_s, restore_s, down_s;
  uint64_t image_bytes = 0;
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
  for (int r = 0; r < runs; r++) {
    cp.push_back(memcpy_gbps(bytes));
    std::string file = dir + "/page_bench.file";
    wr.push_back(tmpfs_write_gbps(file, bytes));
    rd.push_back(tmpfs_read_gbps(file, bytes));
    unlink(file.c_str());

    pid_t target = start_target(mib);
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
  std::printf("| process memory (touched, anonymous) | %zu MiB |\n", mib);
  std::printf("| memcpy | %.2f GB/s |\n", median(cp));
  std::printf("| tmpfs write() (%s) | %.2f GB/s |\n", dir.c_str(), median(wr));
  std::printf("| tmpfs read() into fresh memory | %.2f GB/s |\n", median(rd));
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
  return 0;
}
