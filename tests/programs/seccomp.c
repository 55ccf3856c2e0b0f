/* seccomp per thread, and syscalls of the dumper's that a filter forbids.
 *
 * default: no_new_privs; threads T1 and T3 are made, then the main thread
 *   installs F1 with SECCOMP_FILTER_FLAG_TSYNC (all three share it): F1
 *   kills the whole process (SECCOMP_RET_KILL_PROCESS) on the syscalls a
 *   dumper's parasite makes (socket, connect, sendmsg, recvmsg, vmsplice,
 *   sigaltstack, personality, getitimer, umask, prctl, rt_sigaction,
 *   timer_gettime), and answers getcwd with EXDEV. T1 adds F2 (with
 *   SECCOMP_FILTER_FLAG_LOG): getcwd fails with ENOKEY there (the newest
 *   filter's errno wins).
 *   After SIGUSR1: getcwd fails with EXDEV in main and T3, ENOKEY in T1;
 *   /proc/self/task/TID/status shows 1, 2, 1 filters; a TSYNC from main
 *   fails naming T1 (its chain is not main's); a TSYNC from T1 succeeds
 *   (main's and T3's F1 is T1's, shared) and its F3 (uname -> EL2HLT) then
 *   holds in every thread, each with 3 filters.
 * strict: T2 enters strict mode (SECCOMP_SET_MODE_STRICT) and waits in
 *   read() on a pipe; after SIGUSR1 main sends a byte, T2 answers it + 1 and
 *   leaves with a raw exit; its status shows Seccomp 1 before.
 * dropped: main installs a filter without no_new_privs (as root may), then
 *   drops CAP_SYS_ADMIN: the dump must refuse it in one line (the restore
 *   could not install the filter again), and the process runs on.
 * notify: main installs a filter with SECCOMP_FILTER_FLAG_NEW_LISTENER
 *   (getppid -> SECCOMP_RET_USER_NOTIF) and keeps the listener: the dump
 *   must refuse it in one line, and the process runs on. */
#include "prog_common.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

struct rule {
  int nr;
  unsigned action;
};

static int install(const struct rule* rules, int n, unsigned flags) {
  struct sock_filter f[64];
  int i = 0;
  f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  for (int r = 0; r < n; r++) {
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)rules[r].nr, 0, 1);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, rules[r].action);
  }
  f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  struct sock_fprog prog = {(unsigned short)i, f};
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static const struct rule f1[] = {
    {SYS_socket, SECCOMP_RET_KILL_PROCESS},     {SYS_connect, SECCOMP_RET_KILL_PROCESS},
    {SYS_sendmsg, SECCOMP_RET_KILL_PROCESS},    {SYS_recvmsg, SECCOMP_RET_KILL_PROCESS},
    {SYS_vmsplice, SECCOMP_RET_KILL_PROCESS},   {SYS_sigaltstack, SECCOMP_RET_KILL_PROCESS},
    {SYS_personality, SECCOMP_RET_KILL_PROCESS}, {SYS_getitimer, SECCOMP_RET_KILL_PROCESS},
    {SYS_umask, SECCOMP_RET_KILL_PROCESS},      {SYS_prctl, SECCOMP_RET_KILL_PROCESS},
    {SYS_rt_sigaction, SECCOMP_RET_KILL_PROCESS}, {SYS_timer_gettime, SECCOMP_RET_KILL_PROCESS},
    {SYS_getcwd, SECCOMP_RET_ERRNO | EXDEV},
};
static const struct rule f2[] = {{SYS_getcwd, SECCOMP_RET_ERRNO | ENOKEY}};
static const struct rule f3[] = {{SYS_uname, SECCOMP_RET_ERRNO | EL2HLT}};

static volatile int phase;      /* set up (1, 2), check (3), T1's TSYNC (4), check it (5) */
static volatile int done[4];  /* the last phase each thread finished */
static volatile pid_t tids[4];
static volatile int t1_tsync = -2;
static int strict_in[2], strict_out[2];

static long getcwd_errno(void) {
  char buf[256];
  long r = syscall(SYS_getcwd, buf, sizeof(buf));
  return r < 0 ? errno : 0;
}
static long uname_errno(void) {
  struct utsname u;
  return syscall(SYS_uname, &u) < 0 ? errno : 0;
}

static int filters_of(pid_t tid) {
  char path[64], buf[4096];
  snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* p = strstr(buf, "Seccomp_filters:");
  return p ? atoi(p + 16) : -1;
}
static int mode_of(pid_t tid) {
  char path[64], buf[4096];
  snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* p = strstr(buf, "Seccomp:");
  return p ? atoi(p + 8) : -1;
}

static void nap(void) {
  struct timespec ts = {0, 5 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

static void block_usr1(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void* worker(void* arg) {
  int me = (int)(long)arg;
  tids[me] = (pid_t)syscall(SYS_gettid);
  while (phase == 0) nap();  /* until main installed F1 */
  if (me == 1) CHECK(install(f2, 1, SECCOMP_FILTER_FLAG_LOG) == 0, "T1: F2: %s", strerror(errno));
  done[me] = 1;
  while (phase < 2) nap();
  done[me] = 2;
  while (phase < 3) nap();  /* after SIGUSR1 */
  CHECK(getcwd_errno() == (me == 1 ? ENOKEY : EXDEV), "T%d: getcwd answers %ld", me, getcwd_errno());
  done[me] = 3;
  while (phase < 4) nap();
  if (me == 1) {
    /* TSYNC from T1: main's and T3's filter must be an ancestor of T1's */
    t1_tsync = install(f3, 1, SECCOMP_FILTER_FLAG_TSYNC);
  }
  done[me] = 4;
  while (phase < 5) nap();
  CHECK(uname_errno() == EL2HLT, "T%d: uname answers %ld after T1's TSYNC", me, uname_errno());
  done[me] = 5;
  return NULL;
}

static void wait_done(int want, int a, int b) {
  while (done[a] < want || done[b] < want) nap();
}

static void* strict_worker(void* arg) {
  (void)arg;
  tids[2] = (pid_t)syscall(SYS_gettid);
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL) != 0) {
    done[2] = -1;
    return NULL;
  }
  done[2] = 1;
  /* Only read, write, exit and rt_sigreturn from here. */
  unsigned char c;
  while (syscall(SYS_read, strict_in[0], &c, 1) != 1) {
  }
  c++;
  syscall(SYS_write, strict_out[1], &c, 1);
  syscall(SYS_exit, 0);
  return NULL;
}

static int run_strict(const char* ready) {
  CHECK(pipe(strict_in) == 0 && pipe(strict_out) == 0, "pipes");
  block_usr1();
  pthread_t t;
  pthread_create(&t, NULL, strict_worker, NULL);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  while (done[2] == 0) nap();
  if (done[2] < 0) return 2;
  prog_ready(ready);
  prog_wait_usr1();
  CHECK(mode_of(tids[2]) == 1, "T2: Seccomp %d, strict (1) expected", mode_of(tids[2]));
  CHECK(mode_of((pid_t)syscall(SYS_gettid)) == 0, "main: Seccomp %d", mode_of((pid_t)syscall(SYS_gettid)));
  unsigned char c = 41;
  CHECK(write(strict_in[1], &c, 1) == 1, "write to T2");
  CHECK(prog_read_exact(strict_out[0], &c, 1) == 1 && c == 42, "T2 answered %d", c);
  pthread_join(t, NULL);
  return prog_finish();
}

static int run_notify(const char* ready) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 2;
  const struct rule r[] = {{SYS_getppid, SECCOMP_RET_USER_NOTIF}};
  int listener = install(r, 1, SECCOMP_FILTER_FLAG_NEW_LISTENER);
  if (listener < 0) return 2;
  prog_ready(ready);
  prog_wait_usr1();
  CHECK(fcntl(listener, F_GETFD) >= 0, "the listener is open");
  CHECK(getcwd_errno() == 0, "getcwd is allowed");
  return prog_finish();
}

static int run_dropped(const char* ready) {
  if (install(f2, 1, 0) != 0) return 2;
  struct { uint32_t version; int pid; } head = {0x20080522, 0};  /* _LINUX_CAPABILITY_VERSION_3 */
  struct { uint32_t eff, prm, inh; } data[2];
  if (syscall(SYS_capget, &head, data) != 0) return 2;
  data[0].eff &= ~(1u << 21);  /* CAP_SYS_ADMIN */
  data[0].prm &= ~(1u << 21);
  if (syscall(SYS_capset, &head, data) != 0) return 2;
  prog_ready(ready);
  prog_wait_usr1();
  CHECK(getcwd_errno() == ENOKEY, "getcwd answers %ld", getcwd_errno());
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  const char* mode = argc > 3 ? argv[3] : "";  /* argv[2]: the test directory */
  if (!strcmp(mode, "strict")) return run_strict(argv[1]);
  if (!strcmp(mode, "notify")) return run_notify(argv[1]);
  if (!strcmp(mode, "dropped")) return run_dropped(argv[1]);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 2;
  tids[0] = (pid_t)syscall(SYS_gettid);
  pthread_t t1, t3;
  block_usr1();
  pthread_create(&t1, NULL, worker, (void*)1l);
  pthread_create(&t3, NULL, worker, (void*)3l);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  while (!tids[1] || !tids[3]) nap();
  CHECK(install(f1, (int)(sizeof(f1) / sizeof(f1[0])), SECCOMP_FILTER_FLAG_TSYNC) == 0, "F1: %s", strerror(errno));
  phase = 1;
  wait_done(1, 1, 3);
  phase = 2;
  wait_done(2, 1, 3);
  prog_ready(argv[1]);
  prog_wait_usr1();

  CHECK(getcwd_errno() == EXDEV, "main: getcwd answers %ld", getcwd_errno());
  CHECK(filters_of(tids[0]) == 1, "main has %d filters, 1 expected", filters_of(tids[0]));
  CHECK(filters_of(tids[1]) == 2, "T1 has %d filters, 2 expected", filters_of(tids[1]));
  CHECK(filters_of(tids[3]) == 1, "T3 has %d filters, 1 expected", filters_of(tids[3]));
  /* T1's chain (F2 on F1) is not an ancestor of main's (F1): TSYNC names T1. */
  int r = install(f3, 1, SECCOMP_FILTER_FLAG_TSYNC);
  CHECK(r == tids[1], "main's TSYNC answered %d, T1 (%d) expected", r, (int)tids[1]);
  phase = 3;
  wait_done(3, 1, 3);
  phase = 4;
  wait_done(4, 1, 3);
  CHECK(t1_tsync == 0, "T1's TSYNC answered %d (errno %d): F1 is no longer shared", t1_tsync, errno);
  for (int i = 0; i < 4; i++)
    if (i != 2) CHECK(filters_of(tids[i]) == 3, "thread %d has %d filters after T1's TSYNC", i, filters_of(tids[i]));
  CHECK(uname_errno() == EL2HLT, "main: uname answers %ld after T1's TSYNC", uname_errno());
  CHECK(getcwd_errno() == ENOKEY, "main: getcwd answers %ld after T1's TSYNC (F2 is main's now)", getcwd_errno());
  phase = 5;
  wait_done(5, 1, 3);
  pthread_join(t1, NULL);
  pthread_join(t3, NULL);
  return prog_finish();
}
