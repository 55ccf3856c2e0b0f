// Side by side with CRIU: the minicriu CLI against a criu CLI (or another
// minicriu build), alternating, on the same target, in the same rounds.
//
//   criu_side_by_side MIB ROUNDS DIR TOOL=BINARY...
//
// TOOL is m (minicriu: the first, whose ratios to the others are reported),
// w (another minicriu build), c or k (a criu CLI, given with --shell-job and
// its log in DIR). CRIU is never built or fetched here: give the path of one
// built by hand (bench/REPORT.md says how it was built).
//
// Each round: write() and read() of MIB into a file of DIR (the file
// system's limits in the same round), then for each tool in turn a fresh
// target (bench/page_target MIB, next to this program: MIB of touched
// anonymous memory), `dump -R` (timed), a killing dump (timed, and until the
// target is reaped), `restore -d` (timed until the CLI returns), SIGUSR1: the
// restored process checks every word of its memory and must exit 0, else the
// run fails. Printed: a CSV line per run, then medians, ranges, the ratios of
// medians and the medians of the per-round ratios.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench_util.hpp"

using bench::Clock;
using bench::seconds_since;
using bench::start_target;
using bench::wait_exit;

namespace {

std::string g_logs;
size_t g_mib;

// Runs argv with stdout to out, stderr to err; returns the wall time, or -1 on failure.
double run(const std::vector<std::string>& argv, const std::string& out, const std::string& err) {
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  auto t = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int n = open("/dev/null", O_RDONLY);
    dup2(n, 0);
    dup2(o, 1);
    dup2(e, 2);
    close_range(3, ~0u, 0);
    execv(a[0], a.data());
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  double s = seconds_since(t);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "FAILED (status %x):", st);
    for (auto& x : argv) std::fprintf(stderr, " %s", x.c_str());
    std::fprintf(stderr, "\n  stderr in %s\n", err.c_str());
    return -1;
  }
  return s;
}

double tmpfs_write(const std::string& path, size_t bytes) {
  std::vector<char> buf(8 << 20, 3);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  auto t = Clock::now();
  for (size_t done = 0; done < bytes; done += buf.size())
    if (write(fd, buf.data(), buf.size()) != (ssize_t)buf.size()) {
      std::perror("write into DIR");
      std::exit(1);
    }
  double s = seconds_since(t);
  close(fd);
  return s;
}

double tmpfs_read(const std::string& path, size_t bytes) {
  int fd = open(path.c_str(), O_RDONLY);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fd < 0 || mem == MAP_FAILED) {
    std::perror("read of DIR's file");
    std::exit(1);
  }
  auto* dst = static_cast<char*>(mem);
  auto t = Clock::now();
  for (size_t done = 0; done < bytes;) {
    ssize_t n = read(fd, dst + done, bytes - done);
    if (n <= 0) {
      std::perror("read of DIR's file");
      std::exit(1);
    }
    done += (size_t)n;
  }
  double s = seconds_since(t);
  if (dst[bytes / 2] != 3) {
    std::fprintf(stderr, "the file of DIR read back wrong\n");
    std::exit(1);
  }
  munmap(mem, bytes);
  close(fd);
  return s;
}

// Other benchmark-like processes on the machine, not ours: page_bench,
// page_target, minicriu, criu, lazy_bench, mpi_bench... whose parent is not us.
int others() {
  int n = 0;
  pid_t me = getpid();
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.empty() || !isdigit(name[0])) continue;
    std::ifstream f(e.path() / "stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    auto l = line.find('('), r = line.rfind(')');
    if (l == std::string::npos || r == std::string::npos) continue;
    std::string comm = line.substr(l + 1, r - l - 1);
    int ppid = std::atoi(line.c_str() + r + 4);
    if (ppid == me || std::atoi(name.c_str()) == me) continue;
    if (comm.find("_bench") != std::string::npos || comm.find("page_target") != std::string::npos ||
        comm == "minicriu" || comm == "criu" || comm.find("_target") != std::string::npos)
      n++;
  }
  return n;
}

double loadavg() {
  std::ifstream f("/proc/loadavg");
  double l;
  f >> l;
  return l;
}

struct Run {
  double dump_r, dump_k, dump_k_reaped, restore;
  uint64_t image;
};

uint64_t dir_bytes(const std::string& d) {
  uint64_t b = 0;
  for (auto& e : std::filesystem::directory_iterator(d))
    if (e.is_regular_file()) b += e.file_size();
  return b;
}

// Extra args from $MARGS / $CARGS (space separated).
void extra(char tool, std::vector<std::string>& v) {
  const char* e = getenv(tool == 'm' ? "MARGS" : "CARGS");
  if (!e) return;
  std::string s = e, w;
  for (char ch : s + " ") {
    if (ch == ' ') { if (!w.empty()) v.push_back(w); w.clear(); } else w += ch;
  }
}
// tool: 'm' or 'c'
bool one_run(char tool, const std::string& bin, const std::string& dir, Run& r, int idx) {
  std::string images = dir + "/criu_side_by_side.images";
  std::string logs = g_logs + "/" + std::to_string(g_mib) + "-" + std::to_string(idx) + tool;
  std::filesystem::create_directories(logs);
  pid_t target = start_target(g_mib);
  std::string t = std::to_string(target);
  auto fresh = [&] {
    std::filesystem::remove_all(images);
    std::filesystem::create_directory(images);
  };
  fresh();
  std::vector<std::string> dr = tool == 'm' ? std::vector<std::string>{bin, "dump", "-t", t, "-D", images, "-R"}
                                            : std::vector<std::string>{bin, "dump", "-t", t, "-D", images, "-R", "--shell-job", "-o", logs + "/dump-R.log"};
  extra(tool, dr);
  r.dump_r = run(dr, logs + "/dump-R.out", logs + "/dump-R.err");
  if (r.dump_r < 0) { kill(target, SIGKILL); waitpid(target, nullptr, 0); return false; }
  r.image = dir_bytes(images);
  fresh();
  std::vector<std::string> dk = tool == 'm' ? std::vector<std::string>{bin, "dump", "-t", t, "-D", images}
                                            : std::vector<std::string>{bin, "dump", "-t", t, "-D", images, "--shell-job", "-o", logs + "/dump.log"};
  extra(tool, dk);
  auto t0 = Clock::now();
  r.dump_k = run(dk, logs + "/dump.out", logs + "/dump.err");
  int st = wait_exit(target, 30);
  r.dump_k_reaped = seconds_since(t0);
  if (r.dump_k < 0) return false;
  if (!(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
    std::fprintf(stderr, "%c: target not killed by the dump (%d)\n", tool, st);
    return false;
  }
  std::vector<std::string> rs = tool == 'm' ? std::vector<std::string>{bin, "restore", "-d", "-D", images}
                                            : std::vector<std::string>{bin, "restore", "-d", "-D", images, "--shell-job", "-o", logs + "/restore.log"};
  extra(tool, rs);
  r.restore = run(rs, logs + "/restore.out", logs + "/restore.err");
  if (r.restore < 0) return false;
  if (kill(target, SIGUSR1) != 0) { std::perror("kill restored"); return false; }
  st = wait_exit(target, 120);
  if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "%c: restored process did not find its memory intact (st %d, errno %d)\n", tool, st, errno);
    return false;
  }
  std::filesystem::remove_all(images);
  return true;
}

double med(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }
double mn(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double mx(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: criu_side_by_side MIB ROUNDS DIR TOOL=BINARY... (TOOL: m, w, c or k)\n");
    return 2;
  }
  g_mib = std::strtoul(argv[1], nullptr, 10);
  int pairs = std::atoi(argv[2]);
  std::string dir = argv[3];
  if (g_mib == 0 || pairs <= 0) {
    std::fprintf(stderr, "criu_side_by_side: MIB and ROUNDS must be positive\n");
    return 2;
  }
  g_logs = dir + "/criu_side_by_side.logs";
  std::vector<char> tools;
  std::vector<std::string> bins;
  for (int i = 4; i < argc; i++) {
    std::string a = argv[i];
    if (a.size() < 3 || a[1] != '=' || std::string("mwck").find(a[0]) == std::string::npos) {
      std::fprintf(stderr, "criu_side_by_side: %s: not TOOL=BINARY (TOOL: m, w, c or k)\n", argv[i]);
      return 2;
    }
    tools.push_back(a[0]);
    bins.push_back(a.substr(2));
  }
  size_t nt = tools.size();
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  size_t bytes = g_mib << 20;
  std::vector<double> wr, rd, load;
  std::vector<std::vector<std::vector<double>>> v(nt, std::vector<std::vector<double>>(4));
  std::vector<uint64_t> img(nt);
  std::printf("round,tool,dump_R_s,dump_kill_s,dump_kill_reaped_s,restore_s,image_MiB,load1,others\n");
  for (int p = 0; p < pairs; p++) {
    std::string file = dir + "/criu_side_by_side.file";
    wr.push_back(tmpfs_write(file, bytes));
    rd.push_back(tmpfs_read(file, bytes));
    unlink(file.c_str());
    for (size_t ti = 0; ti < nt; ti++) {
      char tool = tools[ti];
      Run r{};
      double l = loadavg();
      load.push_back(l);
      int busy = others();
      if (!one_run(tool == 'm' || tool == 'w' ? 'm' : 'c', bins[ti], dir, r, p * 10 + (int)ti)) return 1;
      v[ti][0].push_back(r.dump_r);
      v[ti][1].push_back(r.dump_k);
      v[ti][2].push_back(r.dump_k_reaped);
      v[ti][3].push_back(r.restore);
      img[ti] = r.image;
      busy += others();
      std::printf("%d,%c,%.4f,%.4f,%.4f,%.4f,%.1f,%.2f,%d\n", p, tool, r.dump_r, r.dump_k, r.dump_k_reaped, r.restore,
                  (double)r.image / (1 << 20), l, busy);
      std::fflush(stdout);
    }
  }
  double gb = (double)bytes / 1e9;
  std::printf("\n%zu MiB, %d rounds, load1 %.2f..%.2f (median %.2f)\n", g_mib, pairs, mn(load), mx(load), med(load));
  std::printf("tmpfs write: median %.4f s (%.2f GB/s), range %.4f-%.4f s\n", med(wr), gb / med(wr), mn(wr), mx(wr));
  std::printf("tmpfs read into fresh memory: median %.4f s (%.2f GB/s), range %.4f-%.4f s\n", med(rd), gb / med(rd), mn(rd), mx(rd));
  const char* names[4] = {"dump -R", "dump (kill)", "dump (kill) until reaped", "restore -d"};
  for (int k = 0; k < 4; k++) {
    std::printf("%-26s", names[k]);
    for (size_t ti = 0; ti < nt; ti++)
      std::printf(" | %c %.4f s (%.4f-%.4f) %.2f GB/s", tools[ti], med(v[ti][k]), mn(v[ti][k]), mx(v[ti][k]), gb / med(v[ti][k]));
    for (size_t ti = 1; ti < nt; ti++) std::printf(" | m/%c %.2f", tools[ti], med(v[0][k]) / med(v[ti][k]));
    std::printf("\n");
  }
  // Per-round ratios m/c (adjacent runs), median and range.
  for (int k = 0; k < 4; k++)
    for (size_t ti = 1; ti < nt; ti++) {
      std::vector<double> q;
      for (int p = 0; p < pairs; p++) q.push_back(v[0][k][p] / v[ti][k][p]);
      std::printf("per-round m/%c %-26s median %.2f range %.2f-%.2f\n", tools[ti], names[k], med(q), mn(q), mx(q));
    }
  for (size_t ti = 0; ti < nt; ti++) std::printf("image %c %.1f MiB\n", tools[ti], (double)img[ti] / (1 << 20));
  // Every run passed: its logs are of no more use (a failed one keeps them).
  std::filesystem::remove_all(g_logs);
  return 0;
}
