/* pidfds across a tree, and to a process long gone:
 *
 *   pidfds READY DIR
 *
 * The root P forks C, which forks G. P holds a pidfd to G (its grandchild:
 * restored by C, maybe after P opens its files), C one to P, G one to C; P
 * also holds a pidfd to a child E that exited and that P reaped.
 *
 * After SIGUSR1 (to P, which passes it on): each pidfd to a live process
 * names it (fdinfo Pid) and signals it (pidfd_send_signal 0); the one to E
 * says Pid -1, is readable (the process exited), and signalling through it
 * fails with ESRCH. Exit 0 only if everything held, in every process. */
#include "prog_common.h"

#include <poll.h>
#include <sys/wait.h>

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static int pidfd_signal(int fd, int sig) { return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0); }

/* The Pid: line of the pidfd's fdinfo. */
static long fdinfo_pid(int fd) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
  FILE* f = fopen(p, "r");
  long pid = -100;
  if (!f) return pid;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "Pid: %ld", &pid) == 1) break;
  fclose(f);
  return pid;
}

static void check_live(int fd, pid_t pid, const char* what) {
  CHECK(fdinfo_pid(fd) == pid, "%s: fdinfo Pid %ld, want %d", what, fdinfo_pid(fd), (int)pid);
  CHECK(pidfd_signal(fd, 0) == 0, "%s: pidfd_send_signal: %s", what, strerror(errno));
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  pid_t p = getpid();
  int sync[2], gpid[2]; /* G tells C it is there; C tells P G's pid */
  if (pipe(sync) != 0 || pipe(gpid) != 0) return 2;

  pid_t e = fork();
  if (e == 0) _exit(7);
  int to_e = pidfd_open_(e);
  if (to_e < 0 || waitpid(e, NULL, 0) != e) return 2;

  pid_t c = fork();
  if (c == 0) {
    int to_p = pidfd_open_(p);
    pid_t g = fork();
    if (g == 0) {
      int to_c = pidfd_open_(getppid());
      if (write(sync[1], "g", 1) != 1) _exit(2);
      prog_wait_usr1();
      check_live(to_c, getppid(), "G's pidfd to C");
      _exit(prog_finish());
    }
    char x;
    if (to_p < 0 || read(sync[0], &x, 1) != 1) _exit(2);
    pid_t gg = g;
    if (write(gpid[1], &gg, sizeof gg) != sizeof gg) _exit(2);
    prog_wait_usr1();
    check_live(to_p, p, "C's pidfd to P");
    kill(g, SIGUSR1);
    int st = 0;
    CHECK(waitpid(g, &st, 0) == g && WIFEXITED(st) && WEXITSTATUS(st) == 0, "G failed: %#x", st);
    _exit(prog_finish());
  }
  pid_t g;
  if (read(gpid[0], &g, sizeof g) != sizeof g) return 2;
  int to_g = pidfd_open_(g);
  if (to_g < 0) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();

  check_live(to_g, g, "P's pidfd to its grandchild G");
  CHECK(fdinfo_pid(to_e) == -1, "the pidfd to the reaped E: fdinfo Pid %ld", fdinfo_pid(to_e));
  struct pollfd pf = {to_e, POLLIN, 0};
  CHECK(poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN), "the pidfd to the reaped E is not readable");
  errno = 0;
  CHECK(pidfd_signal(to_e, 0) < 0 && errno == ESRCH, "a signal through the pidfd to E: %s", strerror(errno));
  kill(c, SIGUSR1);
  int st = 0;
  CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "C failed: %#x", st);
  return prog_finish();
}
