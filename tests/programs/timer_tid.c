/* POSIX timers that signal one thread (SIGEV_THREAD_ID): timer A every
 * 20 ms to thread T1 (SIGRTMIN), timer B every 30 ms to the main thread
 * (SIGRTMIN+1), timer C every 40 ms to the process (SIGRTMIN+2, plain
 * SIGEV_SIGNAL), made in the order B, A, C (ids rising, A between). After
 * SIGUSR1, for 400 ms: A's signals land in T1 only, B's in main only, each
 * timer keeps its id, value and interval, and /proc/self/timers names the
 * same threads. */
#include "prog_common.h"

#include <pthread.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static volatile pid_t main_tid, t1_tid;
static volatile int a_in_t1, a_elsewhere, b_in_main, b_elsewhere, c_ticks;
static volatile long a_value, b_value;
static volatile int stop;

static void on_sig(int sig, siginfo_t* si, void* ctx) {
  (void)ctx;
  pid_t me = (pid_t)syscall(SYS_gettid);
  if (sig == SIGRTMIN) {
    if (me == t1_tid) a_in_t1++; else a_elsewhere++;
    a_value = (long)si->si_value.sival_ptr;
  } else if (sig == SIGRTMIN + 1) {
    if (me == main_tid) b_in_main++; else b_elsewhere++;
    b_value = (long)si->si_value.sival_ptr;
  } else {
    c_ticks++;
  }
}

static void nap(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000 * 1000};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void* t1(void* arg) {
  (void)arg;
  t1_tid = (pid_t)syscall(SYS_gettid);
  while (!stop) nap(5);
  return NULL;
}

static int make_timer(int signo, pid_t tid, long value, long period_ms, int* id) {
  struct sigevent sev;
  memset(&sev, 0, sizeof(sev));
  sev.sigev_notify = tid ? SIGEV_THREAD_ID : SIGEV_SIGNAL;
  sev.sigev_signo = signo;
  sev.sigev_value.sival_ptr = (void*)value;
  sev.sigev_notify_thread_id = tid;
  /* The raw syscall: its id is the kernel's, as /proc/self/timers shows it. */
  if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, id) != 0) return -1;
  struct itimerspec its = {{0, period_ms * 1000 * 1000}, {0, period_ms * 1000 * 1000}};
  return (int)syscall(SYS_timer_settime, *id, 0, &its, NULL);
}

/* "notify: signal/tid.TID" of timer id in /proc/self/timers (0 if none). */
static int notify_tid_of(int id) {
  FILE* f = fopen("/proc/self/timers", "r");
  if (!f) return -1;
  char line[256];
  int cur = -1, tid = 0;
  while (fgets(line, sizeof(line), f)) {
    if (sscanf(line, "ID: %d", &cur) == 1) continue;
    int t;
    if (cur == id && sscanf(line, "notify: signal/tid.%d", &t) == 1) tid = t;
  }
  fclose(f);
  return tid;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  main_tid = (pid_t)syscall(SYS_gettid);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_sig;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  for (int s = SIGRTMIN; s <= SIGRTMIN + 2; s++) sigaction(s, &sa, NULL);
  /* C (process-directed) goes to main: T1 blocks it and SIGUSR1. */
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGRTMIN + 2);
  pthread_sigmask(SIG_BLOCK, &block, NULL);
  pthread_t t;
  pthread_create(&t, NULL, t1, NULL);
  pthread_sigmask(SIG_UNBLOCK, &block, NULL);
  while (!t1_tid) nap(1);
  int a, b, c;
  if (make_timer(SIGRTMIN + 1, main_tid, 0xb0b, 30, &b) != 0) return 2;
  if (make_timer(SIGRTMIN, t1_tid, 0xa11ce, 20, &a) != 0) return 2;
  if (make_timer(SIGRTMIN + 2, 0, 0xc, 40, &c) != 0) return 2;
  while (a_in_t1 < 2 || b_in_main < 2 || c_ticks < 1) nap(5);
  prog_ready(argv[1]);
  prog_wait_usr1();

  int a0 = a_in_t1, b0 = b_in_main, c0 = c_ticks;
  nap(400);
  int da = a_in_t1 - a0, db = b_in_main - b0, dc = c_ticks - c0;
  CHECK(da >= 12 && da <= 24, "timer A signalled T1 %d times in 400 ms (every 20 ms expected)", da);
  CHECK(db >= 8 && db <= 16, "timer B signalled main %d times in 400 ms (every 30 ms expected)", db);
  CHECK(dc >= 6 && dc <= 12, "timer C ticked %d times in 400 ms (every 40 ms expected)", dc);
  CHECK(a_elsewhere == 0, "timer A signalled another thread than T1 %d times", a_elsewhere);
  CHECK(b_elsewhere == 0, "timer B signalled another thread than main %d times", b_elsewhere);
  CHECK(a_value == 0xa11ce && b_value == 0xb0b, "sigev values %#lx %#lx", a_value, b_value);
  CHECK(notify_tid_of(a) == t1_tid, "timer %d notifies thread %d, T1 is %d", a, notify_tid_of(a), (int)t1_tid);
  CHECK(notify_tid_of(b) == main_tid, "timer %d notifies thread %d, main is %d", b, notify_tid_of(b), (int)main_tid);
  struct itimerspec cur;
  CHECK(syscall(SYS_timer_gettime, a, &cur) == 0 && cur.it_interval.tv_nsec == 20 * 1000 * 1000, "A's interval");
  CHECK(syscall(SYS_timer_gettime, b, &cur) == 0 && cur.it_interval.tv_nsec == 30 * 1000 * 1000, "B's interval");
  CHECK(syscall(SYS_timer_gettime, c, &cur) == 0 && cur.it_interval.tv_nsec == 40 * 1000 * 1000, "C's interval");
  stop = 1;
  pthread_join(t, NULL);
  return prog_finish();
}
