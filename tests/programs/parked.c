/* Threads parked in known functions for `show --backtrace` and `coredump`
 * (built -g -O0: every function keeps its frame and its locals on the stack).
 * The main thread waits in park_main; one thread blocks in read() in
 * park_reader, one in pthread_cond_wait() in park_waiter, one spins in user
 * space in park_spinner, and one sleeps in a signal handler, park_handler,
 * which interrupted park_signalled. Each holds a local with a known value,
 * and parked_global has one too. After SIGUSR1 every thread is released and
 * joined, and each checks its local. */
#include "prog_common.h"

#include <pthread.h>

long parked_global = 0x5eed1234;

static int release_pipe[2];
static volatile int stop;
static volatile int parked;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void mark_parked(void) { __atomic_add_fetch(&parked, 1, __ATOMIC_SEQ_CST); }

static void* park_reader(void* arg) {
  (void)arg;
  volatile int reader_local = 1001;
  char c;
  mark_parked();
  while (read(release_pipe[0], &c, 1) < 0 && errno == EINTR) {
  }
  return (void*)(long)(reader_local == 1001);
}

static void* park_waiter(void* arg) {
  (void)arg;
  volatile int waiter_local = 1002;
  pthread_mutex_lock(&mutex);
  mark_parked();
  while (!stop) pthread_cond_wait(&cond, &mutex);
  pthread_mutex_unlock(&mutex);
  return (void*)(long)(waiter_local == 1002);
}

static void* park_spinner(void* arg) {
  (void)arg;
  volatile int spinner_local = 1003;
  mark_parked();
  while (!stop) {
    for (volatile int i = 0; i < 1000000 && !stop; i++) {
    }
  }
  return (void*)(long)(spinner_local == 1003);
}

static void park_handler(int sig) {
  (void)sig;
  volatile int handler_local = 1004;
  mark_parked();
  while (!stop && handler_local == 1004) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void* park_signalled(void* arg) {
  (void)arg;
  volatile int signalled_local = 1005;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = park_handler;
  sigaction(SIGUSR2, &sa, NULL);
  pthread_kill(pthread_self(), SIGUSR2);
  return (void*)(long)(signalled_local == 1005);
}

static void park_main(void) {
  volatile int main_local = 1000;
  prog_wait_usr1();
  CHECK(main_local == 1000, "main_local is %d", main_local);
}

int main(int argc, char** argv) {
  if (argc < 2) return 100;
  prog_install_usr1();
  if (pipe(release_pipe) != 0) return 100;
  /* Only the main thread takes SIGUSR1. */
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  void* (*bodies[])(void*) = {park_reader, park_waiter, park_spinner, park_signalled};
  pthread_t threads[4];
  for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, bodies[i], NULL);
  pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
  while (__atomic_load_n(&parked, __ATOMIC_SEQ_CST) < 4) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  /* Into their calls: a thread that marked itself is a few instructions
   * from its blocking call. */
  struct timespec settle = {0, 50 * 1000 * 1000};
  nanosleep(&settle, NULL);
  prog_ready(argv[1]);
  park_main();

  stop = 1;
  pthread_mutex_lock(&mutex);
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&mutex);
  CHECK(write(release_pipe[1], "x", 1) == 1, "release write");
  for (int i = 0; i < 4; i++) {
    void* ok = NULL;
    pthread_join(threads[i], &ok);
    CHECK(ok == (void*)1L, "thread %d lost its local", i);
  }
  CHECK(parked_global == 0x5eed1234, "parked_global is %lx", parked_global);
  return prog_failures ? 1 : 0;
}
