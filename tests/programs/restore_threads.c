/* restore_threads: the main thread and 7 more, each with its own memory
 * pattern (8 MiB) and AVX-512 registers, blocked in different syscalls:
 * threads 1-6 in futex wait, thread 7 in nanosleep, the main thread in ppoll().
 * Writes its pid to argv[1] when every thread is in place, waits for SIGUSR1,
 * then each thread checks its state (tid, pattern, zmm0-31, k0-7, sigmask, a
 * TLS variable). Exits 0; 10 if the pid changed; 20 + N if thread N failed a
 * check (stderr says which).
 * Usage: restore_threads READY_FILE */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "restore_avx512.h"

#define NTHREADS 8
#define PATTERN_WORDS ((8u << 20) / 8)

static volatile int go;          /* futex word: threads 1-6 wait on it */
static volatile int got_usr1;
static volatile int in_place;
static __thread int tls_marker;

struct thread {
  pthread_t handle;
  int index;
  pid_t tid;
  uint64_t* pattern;
  struct avx512_state in, out;
  int result;
};
static struct thread threads[NTHREADS];

static uint64_t word(int t, size_t i) { return (i + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)t << 56); }

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static int check(struct thread* t) {
  if (syscall(SYS_gettid) != t->tid) return 1;
  for (size_t i = 0; i < PATTERN_WORDS; i++)
    if (t->pattern[i] != word(t->index, i)) return 2;
  if (memcmp(t->in.zmm, t->out.zmm, sizeof(t->in.zmm)) != 0) return 3;
  if (memcmp(t->in.k, t->out.k, sizeof(t->in.k)) != 0) return 4;
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, NULL, &mask);
  if (sigismember(&mask, SIGUSR1) != (t->index != 0)) return 5;
  if (tls_marker != 1000 + t->index) return 6;
  return 0;
}

static void prepare(struct thread* t) {
  t->tid = (pid_t)syscall(SYS_gettid);
  tls_marker = 1000 + t->index;
  t->pattern = malloc(PATTERN_WORDS * 8);
  for (size_t i = 0; i < PATTERN_WORDS; i++) t->pattern[i] = word(t->index, i);
  avx512_fill(&t->in, (uint64_t)t->index + 100);
}

static void* thread_main(void* arg) {
  struct thread* t = arg;
  prepare(t);
  __atomic_add_fetch(&in_place, 1, __ATOMIC_SEQ_CST);
  if (t->index == NTHREADS - 1) {
    static const struct timespec nap = {0, 50 * 1000 * 1000};
    avx512_hold(&t->in, &t->out, &go, SYS_nanosleep, (long)&nap, 0, 0);
  } else {
    /* futex(&go, FUTEX_WAIT_PRIVATE, 0): returns at once once go != 0. */
    avx512_hold_futex(&t->in, &t->out, &go);
  }
  t->result = check(t);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s READY_FILE\n", argv[0]);
    return 2;
  }
  for (int fd = 3; fd < 1024; fd++) close(fd);
  pid_t pid = getpid();
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  /* SIGUSR1 is for the main thread: the others block it. */
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  threads[0].index = 0;
  prepare(&threads[0]);
  for (int i = 1; i < NTHREADS; i++) {
    threads[i].index = i;
    pthread_create(&threads[i].handle, NULL, thread_main, &threads[i]);
  }
  pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
  while (__atomic_load_n(&in_place, __ATOMIC_SEQ_CST) != NTHREADS - 1) usleep(1000);
  usleep(100 * 1000);  /* let them enter their syscalls */

  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
  FILE* f = fopen(tmp, "w");
  fprintf(f, "%d\n", pid);
  fclose(f);
  rename(tmp, argv[1]);

  static const struct timespec tick = {0, 20 * 1000 * 1000};
  avx512_hold(&threads[0].in, &threads[0].out, &got_usr1, SYS_ppoll, 0, 0, (long)&tick);
  threads[0].result = check(&threads[0]);
  if (getpid() != pid) return 10;
  __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, NTHREADS, NULL, NULL, 0);
  for (int i = 1; i < NTHREADS; i++) pthread_join(threads[i].handle, NULL);
  for (int i = 0; i < NTHREADS; i++)
    if (threads[i].result) {
      fprintf(stderr, "thread %d: check %d failed\n", i, threads[i].result);
      return 20 + i;
    }
  return 0;
}
