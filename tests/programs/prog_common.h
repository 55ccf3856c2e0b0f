/* Shared by the e2e test programs: readiness, the wait for SIGUSR1, and checks
 * that report what failed. Every program: builds its state, writes READY_FILE
 * (argv[1]) with its pid, waits for SIGUSR1 (sent after the dump, or after the
 * restore), verifies everything itself and exits 0 only if all of it held. */
#ifndef PROG_COMMON_H
#define PROG_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t prog_usr1;
static void prog_on_usr1(int sig) { (void)sig; prog_usr1 = 1; }

static int prog_failures;
#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
      prog_failures++;                                                \
    }                                                                 \
  } while (0)

static inline void prog_install_usr1(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = prog_on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
}

/* Written atomically: the driver polls for the file. */
static inline void prog_ready(const char* path) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE* f = fopen(tmp, "w");
  if (!f) { perror("ready file"); exit(100); }
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  if (rename(tmp, path) != 0) { perror("rename ready"); exit(100); }
}

static inline uint64_t prog_hash(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
  return x;
}

/* Waits for SIGUSR1 in short sleeps, not pause(): a restored thread re-issues
 * the call it was dumped in, and a signal handled just before it gets there
 * would leave a re-issued pause() waiting forever (the kernel would have
 * returned EINTR). See the note in src/arch/x86_64/regs.hpp. */
static inline void prog_wait_usr1(void) {
  while (!prog_usr1) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Reads exactly n bytes unless the stream ends or fails first; returns how
 * many were read. */
static inline size_t prog_read_exact(int fd, void* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char*)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  return got;
}

static inline int prog_finish(void) {
  if (prog_failures) fprintf(stderr, "%d check(s) failed\n", prog_failures);
  else fprintf(stderr, "all checks passed\n");
  return prog_failures ? 1 : 0;
}

/* A thread that ticks every millisecond; at its first tick after a gap of
 * more than 100 ms (a dump, a restore) it calls at_gap (if any) and writes
 * the CLOCK_REALTIME time of that tick to path: the restored process's first
 * instructions (bench/lazy_bench). */
struct prog_gap_watch {
  char path[4096];
  void (*at_gap)(void);
};

static inline void* prog_gap_watcher(void* arg) {
  struct prog_gap_watch* w = (struct prog_gap_watch*)arg;
  struct timespec last, now;
  int stamped = 0;
  clock_gettime(CLOCK_MONOTONIC, &last);
  /* Ticking on after the stamp: the process keeps the same threads. */
  for (;;) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t gap = (now.tv_sec - last.tv_sec) * 1000000000ll + (now.tv_nsec - last.tv_nsec);
    last = now;
    if (gap <= 100 * 1000000ll || stamped) continue;
    stamped = 1;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    if (w->at_gap) w->at_gap();
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
    int fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      (void)!write(fd, buf, (size_t)n);
      close(fd);
    }
  }
  return NULL;
}

static inline void prog_start_gap_watcher(const char* path, void (*at_gap)(void)) {
  struct prog_gap_watch* w = (struct prog_gap_watch*)calloc(1, sizeof(*w));
  if (!w) return;
  snprintf(w->path, sizeof(w->path), "%s", path);
  w->at_gap = at_gap;
  pthread_t t;
  if (pthread_create(&t, NULL, prog_gap_watcher, w) == 0) pthread_detach(t);
}

#endif
