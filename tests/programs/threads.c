/* Eight threads in different states when the dump comes: sleeping in
 * nanosleep, waiting on a condition variable (futex), polling with a timeout,
 * and spinning in user space; each with its own memory pattern and counter.
 * After SIGUSR1 (to the main thread, waiting in nanosleep) every thread is
 * stopped and joined, and each checks its pattern and that it kept running. */
#include "prog_common.h"

#include <poll.h>
#include <pthread.h>

#define NTHREADS 8
#define WORDS (1u << 18) /* 2 MiB per thread */

struct worker {
  pthread_t thread;
  int index;
  pid_t tid;
  uint64_t* pattern;
  volatile uint64_t progress;
  int ok;
};

static struct worker workers[NTHREADS];
static volatile int stop;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int started;

static void* work(void* arg) {
  struct worker* w = arg;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  w->tid = (pid_t)syscall(SYS_gettid);
  w->pattern = malloc(WORDS * sizeof(uint64_t));
  for (uint64_t i = 0; i < WORDS; i++) w->pattern[i] = prog_hash(i * NTHREADS + (uint64_t)w->index);
  __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
  while (!stop) {
    switch (w->index % 4) {
      case 0: {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        break;
      }
      case 1:
        pthread_mutex_lock(&mutex);
        if (!stop) pthread_cond_wait(&cond, &mutex);
        pthread_mutex_unlock(&mutex);
        break;
      case 2:
        poll(NULL, 0, 7);
        break;
      case 3:
        for (volatile int spin = 0; spin < 100000; spin++) {
        }
        break;
    }
    w->progress++;
  }
  uint64_t bad = 0;
  for (uint64_t i = 0; i < WORDS; i++) bad += w->pattern[i] != prog_hash(i * NTHREADS + (uint64_t)w->index);
  w->ok = bad == 0 && w->tid == (pid_t)syscall(SYS_gettid);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  for (int i = 0; i < NTHREADS; i++) {
    workers[i].index = i;
    pthread_create(&workers[i].thread, NULL, work, &workers[i]);
  }
  while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < NTHREADS) usleep(1000);
  prog_ready(argv[1]);
  prog_wait_usr1();

  uint64_t at_signal[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) at_signal[i] = workers[i].progress;
  /* Every thread but the condvar waiters must still make progress. */
  usleep(100 * 1000);
  for (int i = 0; i < NTHREADS; i++)
    if (i % 4 != 1) CHECK(workers[i].progress > at_signal[i], "thread %d stopped making progress", i);
  stop = 1;
  pthread_mutex_lock(&mutex);
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&mutex);
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(workers[i].thread, NULL);
    CHECK(workers[i].ok, "thread %d: pattern or tid changed", i);
  }
  return prog_finish();
}
