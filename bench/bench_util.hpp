// What the benchmarks share: wall time, the page target, and waiting for a
// child with a limit.
#pragma once

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Waits up to timeout_s for pid to end and returns its wait status; kills
// it if it does not end (-1, errno ETIMEDOUT). -1 with errno from waitpid if
// it is not our child.
inline int wait_exit(pid_t pid, double timeout_s) {
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
    usleep(500);
  }
}

// bench/page_target.c, built next to us, with `mib` of touched memory; it
// closes its end of a pipe when ready.
// With ghost_dir, its memory is an unlinked file of that directory, shared;
// with huge, anonymous memory with MADV_HUGEPAGE.
inline pid_t start_target(size_t mib, const std::string& ghost_dir = "", bool huge = false) {
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
    if (huge)
      execl(target.c_str(), target.c_str(), arg.c_str(), "huge", nullptr);
    else if (ghost_dir.empty())
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

}  // namespace bench
