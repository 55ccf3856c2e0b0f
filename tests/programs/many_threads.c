/* A hundred threads, each counting in nanosleep with its own TLS value; after
 * SIGUSR1 every one must still be counting, with its own tid and value, as an
 * MPI rank with many progress and helper threads would be. */
#include "prog_common.h"

#include <pthread.h>

#define N 100

static volatile int stop;
static volatile long counts[N];
static volatile int ok[N];
static __thread long mine;

static void* work(void* arg) {
  long i = (long)arg;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  mine = (long)prog_hash((uint64_t)i);
  pid_t tid = (pid_t)syscall(SYS_gettid);
  while (!stop) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    counts[i]++;
  }
  ok[i] = mine == (long)prog_hash((uint64_t)i) && tid == (pid_t)syscall(SYS_gettid);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  pthread_t t[N];
  for (long i = 0; i < N; i++) pthread_create(&t[i], NULL, work, (void*)i);
  for (int i = 0; i < N; i++)
    while (counts[i] == 0) usleep(1000);
  prog_ready(argv[1]);
  prog_wait_usr1();
  long before[N];
  for (int i = 0; i < N; i++) before[i] = counts[i];
  usleep(300 * 1000);
  int stalled = 0;
  for (int i = 0; i < N; i++) stalled += counts[i] <= before[i];
  CHECK(stalled == 0, "%d of %d threads stopped counting", stalled, N);
  stop = 1;
  int bad = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    bad += !ok[i];
  }
  CHECK(bad == 0, "%d threads lost their tid or TLS", bad);
  return prog_finish();
}
