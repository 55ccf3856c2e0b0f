/* Process attributes that a restore must give back exactly.
 *
 * Scheduling, per thread (sched_setattr, each thread for itself):
 *   main  SCHED_OTHER, nice 4
 *   T1    SCHED_FIFO priority 10, SCHED_RESET_ON_FORK
 *   T2    SCHED_BATCH, nice 7
 *   T3    SCHED_IDLE
 *   T4    SCHED_OTHER, nice -3 (lower than the parent's: CAP_SYS_NICE)
 *   T5    SCHED_RR priority 3
 *   T6    SCHED_DEADLINE runtime 1 ms, deadline 20 ms, period 20 ms (where
 *         the kernel admits it; else SCHED_OTHER nice 1)
 * Process-wide: oom_score_adj 345; the audit loginuid 4242 (where it is
 * still unset and settable); membarrier registrations GLOBAL_EXPEDITED,
 * PRIVATE_EXPEDITED and PRIVATE_EXPEDITED_RSEQ; mlockall(MCL_FUTURE | MCL_ONFAULT).
 * After SIGUSR1 each thread compares sched_getattr and getpriority with
 * what it set; main checks the rest (a new mapping is locked on fault: its
 * VmFlags show "lo" and its pages are not populated). */
#include "prog_common.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define NTHREADS 7

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif
#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif
#define SCHED_FLAG_RESET_ON_FORK 0x01

/* <linux/sched/types.h>, which does not mix with glibc's <sched.h>. */
struct sched_attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
  uint32_t sched_util_min, sched_util_max;
};

struct want {
  struct sched_attr attr;
  int prio;  /* getpriority */
};

static struct want wants[NTHREADS];
static volatile pid_t tids[NTHREADS];
static volatile int set_up[NTHREADS], checked[NTHREADS];
static volatile int go;
static int have_loginuid;

static int my_setattr(struct sched_attr* a) { return (int)syscall(SYS_sched_setattr, 0, a, 0); }
static int my_getattr(struct sched_attr* a) {
  memset(a, 0, sizeof(*a));
  return (int)syscall(SYS_sched_getattr, 0, a, sizeof(*a), 0);
}

static void nap(void) {
  struct timespec ts = {0, 5 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

static void set_mine(int me) {
  struct sched_attr a;
  memset(&a, 0, sizeof(a));
  a.size = sizeof(a);
  switch (me) {
    case 0: a.sched_policy = SCHED_OTHER; a.sched_nice = 4; break;
    case 1: a.sched_policy = SCHED_FIFO; a.sched_priority = 10; a.sched_flags = SCHED_FLAG_RESET_ON_FORK; break;
    case 2: a.sched_policy = SCHED_BATCH; a.sched_nice = 7; break;
    case 3: a.sched_policy = SCHED_IDLE; break;
    case 4: a.sched_policy = SCHED_OTHER; a.sched_nice = -3; break;
    case 5: a.sched_policy = SCHED_RR; a.sched_priority = 3; break;
    case 6:
      a.sched_policy = SCHED_DEADLINE;
      a.sched_runtime = 1000 * 1000;
      a.sched_deadline = a.sched_period = 20 * 1000 * 1000;
      break;
  }
  if (my_setattr(&a) != 0 && me == 6) {
    fprintf(stderr, "SCHED_DEADLINE not admitted (%s): SCHED_OTHER nice 1 instead\n", strerror(errno));
    memset(&a, 0, sizeof(a));
    a.size = sizeof(a);
    a.sched_nice = 1;
    CHECK(my_setattr(&a) == 0, "thread %d: sched_setattr: %s", me, strerror(errno));
  }
  CHECK(my_getattr(&wants[me].attr) == 0, "thread %d: sched_getattr: %s", me, strerror(errno));
  CHECK(wants[me].attr.sched_policy == a.sched_policy, "thread %d: policy %u after setting %u", me,
        wants[me].attr.sched_policy, a.sched_policy);
  errno = 0;
  wants[me].prio = getpriority(PRIO_PROCESS, 0);
}

static void check_mine(int me) {
  struct sched_attr a;
  CHECK(my_getattr(&a) == 0, "thread %d: sched_getattr: %s", me, strerror(errno));
  struct sched_attr* w = &wants[me].attr;
  CHECK(a.sched_policy == w->sched_policy, "thread %d: policy %u, %u expected", me, a.sched_policy, w->sched_policy);
  CHECK(a.sched_priority == w->sched_priority, "thread %d: priority %u, %u expected", me, a.sched_priority,
        w->sched_priority);
  CHECK(a.sched_flags == w->sched_flags, "thread %d: flags %#llx, %#llx expected", me,
        (unsigned long long)a.sched_flags, (unsigned long long)w->sched_flags);
  CHECK(a.sched_nice == w->sched_nice, "thread %d: nice %d, %d expected", me, a.sched_nice, w->sched_nice);
  CHECK(a.sched_runtime == w->sched_runtime && a.sched_deadline == w->sched_deadline &&
            a.sched_period == w->sched_period,
        "thread %d: deadline parameters %llu/%llu/%llu, %llu/%llu/%llu expected", me,
        (unsigned long long)a.sched_runtime, (unsigned long long)a.sched_deadline,
        (unsigned long long)a.sched_period, (unsigned long long)w->sched_runtime,
        (unsigned long long)w->sched_deadline, (unsigned long long)w->sched_period);
  CHECK(a.sched_util_min == w->sched_util_min && a.sched_util_max == w->sched_util_max,
        "thread %d: util clamps %u-%u, %u-%u expected", me, a.sched_util_min, a.sched_util_max, w->sched_util_min,
        w->sched_util_max);
  int prio = getpriority(PRIO_PROCESS, 0);
  CHECK(prio == wants[me].prio, "thread %d: getpriority %d, %d expected", me, prio, wants[me].prio);
}

static void* worker(void* arg) {
  int me = (int)(long)arg;
  tids[me] = (pid_t)syscall(SYS_gettid);
  set_mine(me);
  set_up[me] = 1;
  while (!go) nap();
  check_mine(me);
  checked[me] = 1;
  return NULL;
}

static int read_int(const char* path, long long* v) {
  char buf[64];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  *v = strtoll(buf, NULL, 10);
  return 0;
}
static int write_text(const char* path, const char* text) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* The VmFlags of the mapping at addr, from /proc/self/smaps. */
static int vmflags_of(void* addr, char* out, size_t size) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  int in = 0;
  unsigned long want = (unsigned long)addr;
  while (fgets(line, sizeof(line), f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) in = s <= want && want < e;
    if (in && !strncmp(line, "VmFlags:", 8)) {
      snprintf(out, size, "%.200s", line + 8);
      fclose(f);
      return 0;
    }
  }
  fclose(f);
  return -1;
}

static void check_mlock(void) {
  long page = sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED, "mmap");
  if (p == MAP_FAILED) return;
  char flags[256] = "";
  CHECK(vmflags_of(p, flags, sizeof(flags)) == 0, "no smaps entry for the new mapping");
  CHECK(strstr(flags, " lo") != NULL, "a new mapping is not locked (MCL_FUTURE lost): VmFlags%s", flags);
  unsigned char vec[4];
  CHECK(mincore(p, 4 * page, vec) == 0 && !(vec[0] & 1) && !(vec[3] & 1),
        "a new mapping is populated: MCL_ONFAULT lost");
  munmap(p, 4 * page);
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  tids[0] = (pid_t)syscall(SYS_gettid);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  pthread_t t[NTHREADS];
  for (long i = 1; i < NTHREADS; i++) pthread_create(&t[i], NULL, worker, (void*)i);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  set_mine(0);
  for (int i = 1; i < NTHREADS; i++)
    while (!set_up[i]) nap();

  CHECK(write_text("/proc/self/oom_score_adj", "345") == 0, "oom_score_adj: %s", strerror(errno));
  long long v = 0;
  if (read_int("/proc/self/loginuid", &v) == 0 && v == 4294967295ll)
    have_loginuid = write_text("/proc/self/loginuid", "4242") == 0;
  else if (read_int("/proc/self/loginuid", &v) == 0 && v == 4242)
    have_loginuid = 1;
  if (!have_loginuid) fprintf(stderr, "the loginuid is set already (%lld): not checked\n", v);
  CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0, "membarrier register: %s",
        strerror(errno));
  CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0,
        "membarrier register global: %s", strerror(errno));
  CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0,
        "membarrier register rseq: %s", strerror(errno));
  CHECK(mlockall(MCL_FUTURE | MCL_ONFAULT) == 0, "mlockall: %s", strerror(errno));
  prog_ready(argv[1]);
  prog_wait_usr1();

  go = 1;
  check_mine(0);
  for (int i = 1; i < NTHREADS; i++) pthread_join(t[i], NULL);
  CHECK(read_int("/proc/self/oom_score_adj", &v) == 0 && v == 345, "oom_score_adj %lld, 345 expected", v);
  if (have_loginuid) CHECK(read_int("/proc/self/loginuid", &v) == 0 && v == 4242, "loginuid %lld, 4242 expected", v);
  long regs = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
  CHECK(regs == (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED |
                 MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ),
        "membarrier registrations %#lx", regs);
  CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0,
        "MEMBARRIER_CMD_PRIVATE_EXPEDITED: %s (not registered)", strerror(errno));
  CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) < 0 && errno == EPERM,
        "MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE registered, which it was not");
  check_mlock();
  return prog_finish();
}
