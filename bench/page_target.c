/* The process page_bench dumps and restores: SIZE_MIB of touched anonymous
 * memory holding a known pattern. It closes every fd but stdio (stdio on
 * /dev/null) to say it is ready, then waits; on SIGUSR1 it checks every word
 * of its memory and exits 0 only if all are intact.
 *
 * A program of its own, not a fork of page_bench: PR_SET_MM_MAP refuses to
 * change exe_file (EBUSY) while the restoring process still maps its old
 * executable, so a restore from page_bench of page_bench itself fails. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

static uint64_t pattern(size_t i) { return i * 0x9e3779b97f4a7c15ull; }

/* page_target SIZE_MIB [ghost DIR | huge]: with "ghost", the memory is a file
 * in DIR mapped MAP_SHARED and unlinked (an MPI shared-memory pool), held by
 * an fd; with "huge", anonymous memory madvise(MADV_HUGEPAGE)d (transparent
 * huge pages where THP is in madvise mode). */
int main(int argc, char** argv) {
  if (argc < 2) return 2;
  size_t bytes = strtoull(argv[1], NULL, 10) << 20;
  uint64_t* mem;
  if (argc > 3 && argv[2][0] == 'g') {
    char path[4096];
    snprintf(path, sizeof(path), "%s/page_target.pool.%d", argv[3], (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) return 2;
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    unlink(path);
    if (fd > 2) dup2(fd, 3); /* kept open below; close_range starts past it */
  } else {
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem != MAP_FAILED && argc > 2 && argv[2][0] == 'h' && madvise(mem, bytes, MADV_HUGEPAGE) != 0) return 2;
  }
  if (mem == MAP_FAILED) return 2;
  for (size_t i = 0; i < bytes / 8; i++) mem[i] = pattern(i);
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  int devnull = open("/dev/null", O_RDWR);
  dup2(devnull, 0);
  dup2(devnull, 1);
  dup2(devnull, 2);
  /* Closing the pipe (with everything else) tells page_bench we are ready. */
  close_range(argc > 3 ? 4 : 3, ~0u, 0);
  /* Short sleeps, not pause(): a restored thread re-issues the call it was
   * dumped in, and a pause() re-issued after the signal was handled would wait
   * forever (tests/programs/prog_common.h). */
  while (!usr1) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  for (size_t i = 0; i < bytes / 8; i++)
    if (mem[i] != pattern(i)) return 1;
  return 0;
}
