// Frozen-time benchmark: how long the application itself sees itself
// stopped by a checkpoint that leaves it running, for a full dump, a
// pre-dump + final dump, and a background dump, while it rewrites 1% of
// its memory a second (PERCENT: another share, "whatever the application
// writes").
//
// The target is tests/programs/background_gens (SIZE of anonymous memory,
// rewritten page by page in a fixed order, a ticker thread that keeps the
// longest gap between its 1 ms ticks); the dumps are the minicriu CLI as a
// child (its peak RSS from wait4), images into DIR. After each dump the
// target checks that all of its pages still agree with its step counter and
// reports its longest gap; a target that finds a wrong page fails the
// benchmark. Then the images are restored (`restore -d`, the chain's last
// for a pre-dump), and the restored copy checks every page the same way.
// Dump GB/s (a full dump's) and restore GB/s are SIZE over the command's
// wall time, set against the machine's limits measured before each size's
// runs: memcpy, write() into DIR, first-touch faults of fresh memory.
//
//   frozen_bench [SIZES_MIB=256,1024,4096] [RUNS=3] [DIR=/dev/shm] [MODES=full,predump,background]
//                [PERCENT=1 of the memory rewritten a second]
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const fs::path kBuild = fs::read_symlink("/proc/self/exe").parent_path().parent_path();

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) out.push_back(x);
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

struct Run {
  int status = -1;
  double secs = 0;  // wall time, fork to exit
  std::string output;
  long max_rss_kb = 0;
};

// The CLI, its stdout and stderr into a file; its peak RSS.
Run minicriu(const std::vector<std::string>& args, const std::string& log) {
  std::string bin = (kBuild / "minicriu").string();
  auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv{bin.data()};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  Run r;
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  r.secs = std::chrono::duration<double>(Clock::now() - t0).count();
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.output = slurp(log);
  r.max_rss_kb = ru.ru_maxrss;
  return r;
}

double frozen_of(const std::string& out) {
  std::smatch m;
  std::string last;
  std::regex re("frozen ([0-9.]+) s");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it) last = (*it)[1];
  return last.empty() ? -1 : std::stod(last);
}

struct Target {
  pid_t pid = -1;
  std::string log;
};

Target start_target(size_t mib, const std::string& dir, double percent) {
  Target t;
  std::string prog = (kBuild / "tests/programs/background_gens").string();
  std::string ready = dir + "/frozen_bench.ready";
  t.log = dir + "/frozen_bench.target.log";
  fs::remove(ready);
  size_t pages = (mib << 20) / 4096;
  std::string npages = std::to_string(pages), rate = std::to_string(std::max<size_t>(static_cast<size_t>(static_cast<double>(pages) * percent / 100), 1));
  t.pid = fork();
  if (t.pid == 0) {
    int fd = open(t.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    for (int i = 3; i < 1024; i++) close(i);
    execl(prog.c_str(), prog.c_str(), ready.c_str(), dir.c_str(), npages.c_str(), rate.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 120000 && !fs::exists(ready); i++) {
    int st;
    if (waitpid(t.pid, &st, WNOHANG) == t.pid) {
      std::fprintf(stderr, "%s did not start: %s\n", prog.c_str(), slurp(t.log).c_str());
      std::exit(1);
    }
    sleep_ms(1);
  }
  return t;
}

// Stops the target; its longest gap (ms), or -1 if it found a wrong page.
double stop_target(Target& t) {
  kill(t.pid, SIGUSR1);
  int status = 0;
  waitpid(t.pid, &status, 0);
  std::string log = slurp(t.log);
  std::smatch m;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !std::regex_search(log, m, std::regex("longest gap ([0-9.]+) ms"))) {
    std::fprintf(stderr, "the target failed its check:\n%s\n", log.c_str());
    return -1;
  }
  return std::stod(m[1]);
}

struct Figures {
  std::vector<double> app_gap_ms, frozen_s, rss_mib, dump_gbs, restore_gbs;
};

std::string fmt_gbs(double v, double limit) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f (%.2f)", v, limit > 0 ? v / limit : 0);
  return buf;
}

double gbs(size_t bytes, double secs) { return secs > 0 ? static_cast<double>(bytes) / secs / 1e9 : 0; }

// The machine's limits for bytes, now: memcpy, write() of a file in dir,
// first touch of fresh anonymous memory (a fault per page), in GB/s.
struct Limits {
  double memcpy_gbs = 0, write_gbs = 0, touch_gbs = 0;
};

Limits measure_limits(size_t bytes, const std::string& dir) {
  Limits l;
  std::vector<char> a(bytes, 1), b(bytes);
  auto t0 = Clock::now();
  std::memcpy(b.data(), a.data(), bytes);
  l.memcpy_gbs = gbs(bytes, std::chrono::duration<double>(Clock::now() - t0).count());
  std::vector<char>().swap(b);  // not held while the file takes as much again
  std::string file = dir + "/frozen_bench.limit";
  int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  t0 = Clock::now();
  for (size_t off = 0; off < bytes;) {
    ssize_t n = write(fd, a.data() + off, std::min<size_t>(bytes - off, 1 << 20));
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  l.write_gbs = gbs(bytes, std::chrono::duration<double>(Clock::now() - t0).count());
  close(fd);
  fs::remove(file);
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  t0 = Clock::now();
  for (size_t off = 0; off < bytes; off += 4096) static_cast<volatile char*>(m)[off] = 1;
  l.touch_gbs = gbs(bytes, std::chrono::duration<double>(Clock::now() - t0).count());
  munmap(m, bytes);
  return l;
}

// The images restored (detached) where the target was; the restored copy
// checks every page and exits 0. The restore's wall time, or -1.
double restore_and_check(const std::string& images, const std::string& log, pid_t pid) {
  Run r = minicriu({"restore", "-d", "-D", images}, log);
  if (r.status != 0) {
    std::fprintf(stderr, "restore failed:\n%s\n", r.output.c_str());
    return -1;
  }
  sleep_ms(300);  // at work again
  kill(pid, SIGUSR1);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "the restored target failed its check (status %#x)\n", status);
    return -1;
  }
  return r.secs;
}

}  // namespace

int main(int argc, char** argv) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  auto sizes = split(argc > 1 ? argv[1] : "256,1024,4096");
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::string dir = argc > 3 ? argv[3] : "/dev/shm";
  auto modes = split(argc > 4 ? argv[4] : "full,predump,background");
  double percent = argc > 5 ? std::atof(argv[5]) : 1.0;
  if (percent <= 0) percent = 1.0;
  std::string images = dir + "/frozen_bench.images";
  std::string log = dir + "/frozen_bench.log";
  std::map<std::pair<std::string, std::string>, Figures> figures;
  std::map<std::string, Limits> limits;
  for (auto& size : sizes) {
    size_t mib = std::strtoul(size.c_str(), nullptr, 10);
    limits[size] = measure_limits(mib << 20, dir);
    for (int r = 0; r < runs; r++) {
      for (auto& mode : modes) {
        fs::remove_all(images);
        fs::create_directories(images);
        Target t = start_target(mib, dir, percent);
        sleep_ms(1000);  // running, rewriting
        kill(t.pid, SIGUSR2);  // its longest gap counts from here
        sleep_ms(100);
        std::string pid = std::to_string(t.pid);
        Run d;
        if (mode == "predump") {
          fs::create_directories(images + "/1");
          fs::create_directories(images + "/2");
          Run pre = minicriu({"-v", "pre-dump", "-t", pid, "-D", images + "/1"}, log);
          if (pre.status != 0) {
            std::fprintf(stderr, "pre-dump failed:\n%s\n", pre.output.c_str());
            return 1;
          }
          sleep_ms(1000);
          d = minicriu({"-v", "dump", "-R", "-t", pid, "-D", images + "/2", "--prev-images-dir", "../1"}, log);
          d.max_rss_kb = std::max(d.max_rss_kb, pre.max_rss_kb);
        } else {
          std::vector<std::string> args{"-v", "dump", "-R", "-t", pid, "-D", images};
          if (mode == "background") args.push_back("--background");
          d = minicriu(args, log);
        }
        if (d.status != 0) {
          std::fprintf(stderr, "%s dump failed:\n%s\n", mode.c_str(), d.output.c_str());
          kill(t.pid, SIGKILL);
          return 1;
        }
        sleep_ms(200);
        double gap = stop_target(t);
        if (gap < 0) return 1;
        auto& f = figures[{size, mode}];
        f.app_gap_ms.push_back(gap);
        f.frozen_s.push_back(frozen_of(d.output));
        f.rss_mib.push_back(static_cast<double>(d.max_rss_kb) / 1024);
        if (mode == "full") f.dump_gbs.push_back(gbs(mib << 20, d.secs));
        double restored = restore_and_check(mode == "predump" ? images + "/2" : images, log, t.pid);
        if (restored < 0) return 1;
        f.restore_gbs.push_back(gbs(mib << 20, restored));
        std::fprintf(stderr, "%s MiB %s run %d: the application saw %.1f ms, minicriu says frozen %.3f s, peak RSS %.1f MiB\n",
                     size.c_str(), mode.c_str(), r + 1, gap, frozen_of(d.output), static_cast<double>(d.max_rss_kb) / 1024);
        fs::remove_all(images);
        while (waitpid(-1, nullptr, WNOHANG) > 0) {  // a pre-dump's tracking holder, reparented to us
        }
      }
    }
  }
  std::printf("| memory | mode | longest pause the application saw | minicriu's frozen (last dump) | dump GB/s "
              "(/ write) | restore GB/s (/ first touch) | minicriu peak RSS |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (auto& size : sizes)
    for (auto& mode : modes) {
      auto& f = figures[{size, mode}];
      auto& l = limits[size];
      std::string dump = f.dump_gbs.empty()
                             ? "-"
                             : fmt_gbs(median(f.dump_gbs), l.write_gbs);
      std::printf("| %s MiB | %s | %.1f ms | %.3f s | %s | %s | %.1f MiB |\n", size.c_str(), mode.c_str(),
                  median(f.app_gap_ms), median(f.frozen_s), dump.c_str(),
                  fmt_gbs(median(f.restore_gbs), l.touch_gbs).c_str(), median(f.rss_mib));
    }
  std::printf("\n| memory | memcpy | write() into %s | first touch |\n|---|---|---|---|\n", dir.c_str());
  for (auto& size : sizes)
    std::printf("| %s MiB | %.2f GB/s | %.2f GB/s | %.2f GB/s |\n", size.c_str(), limits[size].memcpy_gbs,
                limits[size].write_gbs, limits[size].touch_gbs);
  fs::remove(log);
  fs::remove(dir + "/frozen_bench.ready");
  fs::remove(dir + "/frozen_bench.target.log");
  return 0;
}
