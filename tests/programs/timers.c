/* Timers that keep ticking: a POSIX timer every 50 ms (SIGRTMIN, with a
 * value), an ITIMER_REAL every 100 ms (SIGALRM). After SIGUSR1 both must
 * still tick at their interval. */
#include "prog_common.h"

#include <sys/time.h>

static volatile int rt_ticks, alrm_ticks;
static volatile long rt_value;

static void on_rt(int sig, siginfo_t* si, void* ctx) {
  (void)sig; (void)ctx;
  rt_ticks++;
  rt_value = (long)si->si_value.sival_ptr;
}
static void on_alrm(int sig) { (void)sig; alrm_ticks++; }

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_rt;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGRTMIN, &sa, NULL);
  signal(SIGALRM, on_alrm);
  timer_t timer;
  struct sigevent sev;
  memset(&sev, 0, sizeof(sev));
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGRTMIN;
  sev.sigev_value.sival_ptr = (void*)0x5eed;
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) return 2;
  struct itimerspec its = {{0, 50 * 1000 * 1000}, {0, 50 * 1000 * 1000}};
  timer_settime(timer, 0, &its, NULL);
  struct itimerval itv = {{0, 100 * 1000}, {0, 100 * 1000}};
  setitimer(ITIMER_REAL, &itv, NULL);
  while (rt_ticks < 2 || alrm_ticks < 1) pause();
  prog_ready(argv[1]);
  prog_wait_usr1();
  int rt0 = rt_ticks, al0 = alrm_ticks;
  struct timespec ts = {0, 500 * 1000 * 1000};
  while (nanosleep(&ts, &ts) != 0) {
  }
  int rt = rt_ticks - rt0, al = alrm_ticks - al0;
  CHECK(rt >= 7 && rt <= 12, "POSIX timer ticked %d times in 500 ms (every 50 ms expected)", rt);
  CHECK(al >= 3 && al <= 6, "ITIMER_REAL ticked %d times in 500 ms (every 100 ms expected)", al);
  CHECK(rt_value == 0x5eed, "sigev_value %#lx", rt_value);
  struct itimerspec cur;
  CHECK(timer_gettime(timer, &cur) == 0 && cur.it_interval.tv_nsec == 50 * 1000 * 1000, "interval");
  return prog_finish();
}
