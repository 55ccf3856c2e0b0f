/* epoll entries whose fd was closed or reused since they were added:
 *
 *   epollgone READY DIR           - entry A: its fd closed, the pipe held by a
 *                                   dup in the same process; entry B: its
 *                                   number reused for /dev/null, the pipe held
 *                                   by a dup; entry C: its fd closed, the pipe
 *                                   held only by a child K
 *   epollgone READY DIR outside   - an entry on an eventfd that only a
 *                                   process outside the tree holds: refused
 *
 * After SIGUSR1: a byte written into each pipe makes the epoll report each
 * entry with its data (and nothing else); the reused number is still
 * /dev/null; the dup reads the byte of its pipe. Exit 0 only if everything
 * held, in K too. */
#include "prog_common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

static int add(int ep, int fd, uint64_t data) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int outside_mode(const char* ready) {
  pid_t root = getpid();
  int ep = epoll_create1(0);
  int ev = eventfd(1, 0);
  if (ep < 0 || ev < 0 || add(ep, ev, 0x4444) != 0) return 2;
  int sync[2];
  if (pipe(sync) != 0) return 2;
  pid_t c = fork();
  if (c == 0) {
    if (fork() == 0) {
      /* G: outside the tree once C is gone; holds the eventfd while the
       * root lives. */
      close(sync[0]);
      close(ep);
      if (write(sync[1], "g", 1) != 1) _exit(2);
      close(sync[1]);
      while (kill(root, 0) == 0) usleep(10000);
      _exit(0);
    }
    _exit(0);
  }
  char x;
  close(sync[1]);
  if (waitpid(c, NULL, 0) != c || read(sync[0], &x, 1) != 1) return 2;
  close(ev);
  close(sync[0]);
  prog_ready(ready);
  prog_wait_usr1();
  struct epoll_event out;
  CHECK(epoll_wait(ep, &out, 1, 1000) == 1 && out.data.u64 == 0x4444, "the eventfd's entry");
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  if (argc > 3 && strcmp(argv[3], "outside") == 0) return outside_mode(argv[1]);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int a[2], b[2], c[2];
  if (ep < 0 || pipe(a) != 0 || pipe(b) != 0 || pipe(c) != 0) return 2;
  /* A: closed, a dup holds the pipe. */
  if (add(ep, a[0], 0x1111) != 0) return 2;
  int a_dup = dup(a[0]);
  close(a[0]);
  /* B: its number reused. */
  if (add(ep, b[0], 0x2222) != 0) return 2;
  int b_num = b[0];
  int b_dup = dup(b[0]);
  close(b[0]);
  int null = open("/dev/null", O_RDONLY);
  if (null < 0 || (null != b_num && (dup2(null, b_num) != b_num || close(null) != 0))) return 2;
  /* C: only the child holds the pipe. */
  if (add(ep, c[0], 0x3333) != 0) return 2;
  pid_t k = fork();
  if (k == 0) {
    close(ep);
    prog_wait_usr1();
    char x;
    CHECK(read(c[0], &x, 1) == 1 && x == 'c', "K: the byte of pipe C");
    _exit(prog_finish());
  }
  close(c[0]);
  if (a_dup < 0 || b_dup < 0) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();

  struct stat st;
  CHECK(fstat(b_num, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3),
        "fd %d is no longer /dev/null", b_num);
  struct epoll_event out[8];
  CHECK(epoll_wait(ep, out, 8, 0) == 0, "an entry is ready before any byte was written");
  if (write(a[1], "a", 1) != 1 || write(b[1], "b", 1) != 1 || write(c[1], "c", 1) != 1) return 3;
  int seen = 0;
  for (int tries = 0; tries < 100 && seen != 7; tries++) {
    int n = epoll_wait(ep, out, 8, 10);
    for (int i = 0; i < n; i++) {
      CHECK(out[i].events & EPOLLIN, "events %#x", out[i].events);
      if (out[i].data.u64 == 0x1111) seen |= 1;
      else if (out[i].data.u64 == 0x2222) seen |= 2;
      else if (out[i].data.u64 == 0x3333) seen |= 4;
      else CHECK(0, "an event with data %#llx", (unsigned long long)out[i].data.u64);
    }
  }
  CHECK(seen == 7, "entries reported: %#x of 7", seen);
  char x;
  CHECK(read(a_dup, &x, 1) == 1 && x == 'a', "the dup of pipe A");
  CHECK(read(b_dup, &x, 1) == 1 && x == 'b', "the dup of pipe B");
  kill(k, SIGUSR1);
  int stk = 0;
  CHECK(waitpid(k, &stk, 0) == k && WIFEXITED(stk) && WEXITSTATUS(stk) == 0, "K failed: %#x", stk);
  return prog_finish();
}
