/* restore_single: one thread with state restore must keep. Writes its pid to
 * argv[1] when ready, waits (in ppoll() with a timeout) for SIGUSR1, then checks everything and
 * exits 0, or the code of the first check that failed:
 *   10 pid   11 memory pattern (64 MiB)   12 file offset   13 SIGUSR2 handler
 *   14 SIGUSR2 no longer pending   15 zmm0-31   16 k0-7   17 SIGUSR2 not delivered
 *   18 sigmask   19 brk/heap   20 file content   21 [vdso] not where the auxv says
 *   22 clock_gettime (vDSO) failed or went backwards   23 /proc/self/exe   24 cmdline
 *   25 umask   26 rlimits   27 ITIMER_REAL   28 sigaltstack   29 a queued SIGRTMIN
 *   (shared, with its payload)   30 rseq no longer registered   32 the untouched area or the
 *   64 GiB PROT_NONE reservation is not usable; killed by SIGSEGV:
 *   the stack cannot grow below its dumped VMA
 * The file it opens is DATA_FILE (argv[2]; in it if it is a directory, as the
 * e2e driver passes its work directory), else READY_FILE.data.
 * Usage: restore_single READY_FILE [DATA_FILE|DIR] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "restore_avx512.h"

#define PATTERN_WORDS ((64u << 20) / 8)

static volatile int got_usr1, got_usr2;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }
static void on_usr2(int sig) { (void)sig; got_usr2 = 1; }

/* The [vdso] line of /proc/self/maps must start where AT_SYSINFO_EHDR says. */
static int vdso_in_place(void) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  unsigned long start = 0;
  while (f && fgets(line, sizeof(line), f))
    if (strstr(line, "[vdso]")) sscanf(line, "%lx", &start);
  if (f) fclose(f);
  return start && start == getauxval(AT_SYSINFO_EHDR);
}

/* Uses about 1 MiB of stack, far below the dumped [stack] VMA. */
static __attribute__((noinline)) int deep(int n) {
  volatile char frame[1024];
  frame[0] = (char)n;
  return n == 0 ? frame[0] : deep(n - 1) + frame[0];
}

static uint64_t word(size_t i) { return i * 0x9e3779b97f4a7c15ull + 0x5555; }

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s READY_FILE [DATA_FILE]\n", argv[0]);
    return 2;
  }
  char data_path[4096];
  struct stat st;
  if (argc > 2 && stat(argv[2], &st) == 0 && S_ISDIR(st.st_mode))
    snprintf(data_path, sizeof(data_path), "%s/restore_single.data", argv[2]);
  else if (argc > 2)
    snprintf(data_path, sizeof(data_path), "%s", argv[2]);
  else
    snprintf(data_path, sizeof(data_path), "%s.data", argv[1]);
  /* Only the fds a checkpoint can take: the rest was inherited. */
  for (int fd = 3; fd < 1024; fd++) close(fd);
  pid_t pid = getpid();

  /* A runtime-style reservation and an untouched writable area: no pages in
   * the image, yet both must be back at their addresses (checked through the
   * last write below and, by the e2e driver, in /proc/PID/maps). */
  char* reservation = mmap(NULL, 64ull << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* untouched = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reservation == MAP_FAILED || untouched == MAP_FAILED) return 5;
  uint64_t* pattern = malloc(PATTERN_WORDS * 8);
  for (size_t i = 0; i < PATTERN_WORDS; i++) pattern[i] = word(i);
  char* heap = malloc(100);  /* small: from brk */
  strcpy(heap, "heap survives");

  int data = open(data_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  for (int i = 0; i < 4096; i++) {
    char c = (char)('a' + i % 26);
    if (write(data, &c, 1) != 1) return 3;
  }
  lseek(data, 1234, SEEK_SET);

  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_usr2;
  sigaction(SIGUSR2, &sa, NULL);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  sigprocmask(SIG_BLOCK, &block, NULL);
  raise(SIGUSR2);

  umask(027);
  struct rlimit nofile = {200, 300}, core = {0, 0};
  setrlimit(RLIMIT_NOFILE, &nofile);
  setrlimit(RLIMIT_CORE, &core);
  struct itimerval timer = {{0, 0}, {1000, 0}};
  signal(SIGALRM, SIG_IGN);
  setitimer(ITIMER_REAL, &timer, NULL);
  static char altstack[64 << 10];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
  sigaltstack(&ss, NULL);
  /* A real-time signal with a payload, blocked and queued for the process
   * (shared pending), twice. */
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &rt, NULL);
  union sigval v1 = {.sival_int = 4242}, v2 = {.sival_int = 4343};
  sigqueue(pid, SIGRTMIN, v1);
  sigqueue(pid, SIGRTMIN, v2);

  struct timespec before;
  clock_gettime(CLOCK_MONOTONIC, &before);
  char exe_before[4096] = {0};
  if (readlink("/proc/self/exe", exe_before, sizeof(exe_before) - 1) < 0) return 4;
  static struct avx512_state in, out;
  avx512_fill(&in, 1);

  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
  FILE* f = fopen(tmp, "w");
  fprintf(f, "%d\n", pid);
  fclose(f);
  rename(tmp, argv[1]);

  static const struct timespec tick = {0, 20 * 1000 * 1000};
  avx512_hold(&in, &out, &got_usr1, SYS_ppoll, 0, 0, (long)&tick);

  if (syscall(SYS_getpid) != pid) return 10;
  for (size_t i = 0; i < PATTERN_WORDS; i++)
    if (pattern[i] != word(i)) return 11;
  if (lseek(data, 0, SEEK_CUR) != 1234) return 12;
  char c;
  if (read(data, &c, 1) != 1 || c != (char)('a' + 1234 % 26)) return 20;
  struct sigaction now;
  sigaction(SIGUSR2, NULL, &now);
  if (now.sa_handler != on_usr2) return 13;
  sigset_t pending, mask;
  sigpending(&pending);
  if (!sigismember(&pending, SIGUSR2)) return 14;
  sigprocmask(SIG_SETMASK, NULL, &mask);
  if (!sigismember(&mask, SIGUSR2) || sigismember(&mask, SIGUSR1)) return 18;
  if (memcmp(in.zmm, out.zmm, sizeof(in.zmm)) != 0) return 15;
  if (memcmp(in.k, out.k, sizeof(in.k)) != 0) return 16;
  if (strcmp(heap, "heap survives") != 0) return 19;
  sigprocmask(SIG_UNBLOCK, &block, NULL);
  if (!got_usr2) return 17;
  if (!vdso_in_place()) return 21;
  struct timespec after;
  if (clock_gettime(CLOCK_MONOTONIC, &after) != 0 || after.tv_sec < before.tv_sec) return 22;
  char exe_after[4096] = {0};
  if (readlink("/proc/self/exe", exe_after, sizeof(exe_after) - 1) < 0 ||
      strcmp(exe_before, exe_after) != 0)
    return 23;
  char cmdline[4096] = {0};
  FILE* cf = fopen("/proc/self/cmdline", "r");
  size_t n = cf ? fread(cmdline, 1, sizeof(cmdline) - 1, cf) : 0;
  if (cf) fclose(cf);
  if (n == 0 || strcmp(cmdline, argv[0]) != 0) return 24;
  mode_t m = umask(0);
  if (m != 027) return 25;
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur != 200 || r.rlim_max != 300) return 26;
  getrlimit(RLIMIT_CORE, &r);
  if (r.rlim_cur != 0 || r.rlim_max != 0) return 26;
  struct itimerval left;
  getitimer(ITIMER_REAL, &left);
  if (left.it_value.tv_sec <= 0 || left.it_value.tv_sec > 1000) return 27;
  stack_t now_ss;
  sigaltstack(NULL, &now_ss);
  if (now_ss.ss_sp != altstack || now_ss.ss_size != sizeof(altstack) || now_ss.ss_flags != 0) return 28;
  siginfo_t si;
  struct timespec zero = {0, 0};
  if (sigtimedwait(&rt, &si, &zero) != SIGRTMIN || si.si_value.sival_int != 4242 ||
      si.si_code != SI_QUEUE || si.si_pid != pid)
    return 29;
  if (sigtimedwait(&rt, &si, &zero) != SIGRTMIN || si.si_value.sival_int != 4343) return 29;
  if (untouched[12345] != 0) return 32;
  untouched[12345] = 1;
  if (mprotect(reservation + (1 << 20), 4096, PROT_READ | PROT_WRITE) != 0) return 32;
  reservation[(1 << 20) + 7] = 1;
  volatile int deep_result = deep(1000);  /* a SIGSEGV here: the stack cannot grow */
  (void)deep_result;
  /* Registering again must fail with EBUSY: the restorer registered it. */
  void* area = (char*)__builtin_thread_pointer() + __rseq_offset;
  if (__rseq_size && (syscall(SYS_rseq, area, 32, 0, RSEQ_SIG) != -1 || errno != EBUSY)) return 30;
  return 0;
}
