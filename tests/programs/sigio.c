/* Signal-driven I/O: owners (F_SETOWN, F_SETOWN_EX), signals (F_SETSIG) and
 * O_ASYNC on pipes and sockets, owned by the process itself, by one of its
 * threads, by a child, and by their process group.
 *
 *   sigio READY DIR           everything below
 *   sigio READY DIR outside   one pipe owned by the parent, outside the tree (refused;
 *                             no O_ASYNC, or its end would signal the parent)
 *
 *   p1      pipe, owner the process, F_SETSIG SIGRTMIN+1, O_ASYNC: a write
 *           brings SIGRTMIN+1 with si_fd p1's read end and si_code POLL_IN
 *   s1      socket pair, owner thread T (F_OWNER_TID), F_SETSIG SIGRTMIN+2,
 *           O_ASYNC: only T gets the signal
 *   p2      pipe, owner the process group (the root leads it, its child is
 *           in it), O_ASYNC: both get SIGIO
 *   s2      socket pair, owner the child (F_OWNER_PID), O_ASYNC: only it does
 *   p3      pipe, F_SETSIG SIGRTMIN+3 only: no owner, no O_ASYNC, no signal
 *   s3      socket pair, owner the process only, no O_ASYNC: no signal
 *
 * After SIGUSR1: F_GETOWN_EX, F_GETSIG and O_ASYNC of each as set, no signal
 * came before, and a write on each brings exactly the signals above. */
#include "prog_common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>

static volatile sig_atomic_t io_main, io_thread, rt1_count, rt1_fd, rt1_code, rt2_count, rt2_tid;
static pid_t thread_tid;
static volatile int stop_thread;

static void on_io(int sig) {
  (void)sig;
  if ((pid_t)syscall(SYS_gettid) == thread_tid) io_thread++;
  else io_main++;
}
static void on_rt1(int sig, siginfo_t* si, void* uc) {
  (void)sig, (void)uc;
  rt1_count++;
  rt1_fd = si->si_fd;
  rt1_code = si->si_code;
}
static void on_rt2(int sig, siginfo_t* si, void* uc) {
  (void)sig, (void)si, (void)uc;
  rt2_count++;
  rt2_tid = (sig_atomic_t)syscall(SYS_gettid);
}

static void *thread_main(void *arg) {
  (void)arg;
  /* SIGIO of the process group goes to the main thread. */
  sigset_t io;
  sigemptyset(&io);
  sigaddset(&io, SIGIO);
  pthread_sigmask(SIG_BLOCK, &io, NULL);
  thread_tid = (pid_t)syscall(SYS_gettid);
  while (!stop_thread) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void handle(int sig, void (*fn)(int, siginfo_t*, void*), void (*plain)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  if (fn) {
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO;
  } else {
    sa.sa_handler = plain;
  }
  sigaction(sig, &sa, NULL);
}

static void set_async(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC); }

static void check_owner(int fd, int type, pid_t pid, const char* what) {
  struct f_owner_ex o = {0, 0};
  CHECK(fcntl(fd, F_GETOWN_EX, &o) == 0 && (int)o.type == type && o.pid == pid, "%s: owner type %d pid %d, want %d %d",
        what, o.type, o.pid, type, pid);
}

static void check_async(int fd, int on, const char* what) {
  CHECK(!!(fcntl(fd, F_GETFL) & O_ASYNC) == on, "%s: O_ASYNC %s", what, on ? "lost" : "appeared");
}

/* Waits up to 2 s for *v to reach want. */
static int wait_for(volatile sig_atomic_t* v, int want) {
  for (int i = 0; i < 200 && *v < want; i++) usleep(10000);
  return *v == want;
}

static volatile sig_atomic_t child_io;
static void on_child_io(int sig) { (void)sig; child_io++; }

/* The child: counts its SIGIOs and tells them on request. */
static void child_main(int ask, int tell) {
  handle(SIGIO, NULL, on_child_io);
  char c;
  while (prog_read_exact(ask, &c, 1) == 1) {
    int n = child_io;
    write(tell, &n, sizeof n);
  }
  _exit(0);
}

static int child_count(int ask, int tell) {
  usleep(100000);  /* a signal on its way to the child lands first */
  int n = -1;
  char c = '?';
  if (write(ask, &c, 1) != 1 || prog_read_exact(tell, &n, sizeof n) != sizeof n) return -1;
  return n;
}

static int outside_mode(const char* ready) {
  int p[2];
  if (pipe(p) != 0) return 2;
  pid_t parent = getppid();
  /* No O_ASYNC: the pipe would signal the parent when it goes. */
  CHECK(fcntl(p[0], F_SETOWN, parent) == 0, "F_SETOWN to the parent: %s", strerror(errno));
  prog_ready(ready);
  prog_wait_usr1();
  check_owner(p[0], F_OWNER_PID, parent, "p1");
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  if (argc > 3 && strcmp(argv[3], "outside") == 0) return outside_mode(argv[1]);
  pid_t me = getpid();
  if (setpgid(0, 0) != 0) return 2;
  handle(SIGIO, NULL, on_io);
  handle(SIGRTMIN + 1, on_rt1, NULL);
  handle(SIGRTMIN + 2, on_rt2, NULL);

  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, NULL) != 0) return 2;
  while (!thread_tid) usleep(1000);

  int ask[2], tell[2];
  if (pipe(ask) != 0 || pipe(tell) != 0) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(ask[1]);
    close(tell[0]);
    child_main(ask[0], tell[1]);
  }
  close(ask[0]);
  close(tell[1]);

  int p1[2], p2[2], p3[2], s1[2], s2[2], s3[2];
  if (pipe2(p1, O_NONBLOCK) != 0 || pipe2(p2, O_NONBLOCK) != 0 || pipe2(p3, O_NONBLOCK) != 0 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s1) != 0 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s2) != 0 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s3) != 0)
    return 2;
  CHECK(fcntl(p1[0], F_SETOWN, me) == 0 && fcntl(p1[0], F_SETSIG, SIGRTMIN + 1) == 0, "p1: %s", strerror(errno));
  set_async(p1[0]);
  struct f_owner_ex to_thread = {F_OWNER_TID, thread_tid};
  CHECK(fcntl(s1[0], F_SETOWN_EX, &to_thread) == 0 && fcntl(s1[0], F_SETSIG, SIGRTMIN + 2) == 0, "s1: %s",
        strerror(errno));
  set_async(s1[0]);
  CHECK(fcntl(p2[0], F_SETOWN, -me) == 0, "p2: %s", strerror(errno));
  set_async(p2[0]);
  struct f_owner_ex to_child = {F_OWNER_PID, child};
  CHECK(fcntl(s2[0], F_SETOWN_EX, &to_child) == 0, "s2: %s", strerror(errno));
  set_async(s2[0]);
  CHECK(fcntl(p3[0], F_SETSIG, SIGRTMIN + 3) == 0, "p3: %s", strerror(errno));
  CHECK(fcntl(s3[0], F_SETOWN, me) == 0, "s3: %s", strerror(errno));

  prog_ready(argv[1]);
  prog_wait_usr1();

  check_owner(p1[0], F_OWNER_PID, me, "p1");
  CHECK(fcntl(p1[0], F_GETSIG) == SIGRTMIN + 1, "p1: F_GETSIG %d", fcntl(p1[0], F_GETSIG));
  check_async(p1[0], 1, "p1");
  check_owner(s1[0], F_OWNER_TID, thread_tid, "s1");
  CHECK(fcntl(s1[0], F_GETSIG) == SIGRTMIN + 2, "s1: F_GETSIG %d", fcntl(s1[0], F_GETSIG));
  check_async(s1[0], 1, "s1");
  check_owner(p2[0], F_OWNER_PGRP, me, "p2");
  CHECK(fcntl(p2[0], F_GETOWN) == -me, "p2: F_GETOWN %d", fcntl(p2[0], F_GETOWN));
  check_async(p2[0], 1, "p2");
  check_owner(s2[0], F_OWNER_PID, child, "s2");
  check_async(s2[0], 1, "s2");
  CHECK(fcntl(p3[0], F_GETSIG) == SIGRTMIN + 3, "p3: F_GETSIG %d", fcntl(p3[0], F_GETSIG));
  check_owner(p3[0], F_OWNER_TID, 0, "p3");
  check_async(p3[0], 0, "p3");
  check_owner(s3[0], F_OWNER_PID, me, "s3");
  check_async(s3[0], 0, "s3");
  CHECK(io_main == 0 && io_thread == 0 && rt1_count == 0 && rt2_count == 0 && child_count(ask[1], tell[0]) == 0,
        "signals before any write: SIGIO %d (thread %d), rt1 %d, rt2 %d", (int)io_main, (int)io_thread,
        (int)rt1_count, (int)rt2_count);

  char b = 'x';
  CHECK(write(p1[1], &b, 1) == 1 && wait_for(&rt1_count, 1), "p1: no SIGRTMIN+1");
  CHECK(rt1_fd == p1[0] && rt1_code == POLL_IN, "p1: si_fd %d (want %d), si_code %d", (int)rt1_fd, p1[0],
        (int)rt1_code);
  CHECK(write(s1[1], &b, 1) == 1 && wait_for(&rt2_count, 1), "s1: no SIGRTMIN+2");
  CHECK(rt2_tid == thread_tid, "s1: the signal went to %d, not the thread %d", (int)rt2_tid, thread_tid);
  CHECK(write(p2[1], &b, 1) == 1 && wait_for(&io_main, 1), "p2: no SIGIO in the process");
  CHECK(child_count(ask[1], tell[0]) == 1, "p2: the child of the group got no SIGIO");
  CHECK(write(s2[1], &b, 1) == 1 && child_count(ask[1], tell[0]) == 2, "s2: the child got no SIGIO");
  CHECK(write(p3[1], &b, 1) == 1 && write(s3[1], &b, 1) == 1, "p3, s3: write");
  usleep(100000);
  CHECK(io_main == 1 && io_thread == 0 && rt1_count == 1 && rt2_count == 1,
        "signals at the end: SIGIO %d (thread %d), rt1 %d, rt2 %d", (int)io_main, (int)io_thread,
        (int)rt1_count, (int)rt2_count);

  close(ask[1]);
  int st;
  CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed");
  stop_thread = 1;
  pthread_join(t, NULL);
  return prog_finish();
}
