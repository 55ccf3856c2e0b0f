/* A process whose fd table, mappings and signal state a dump must leave as
 * they were, even one that fails halfway: a file open at an offset, a pipe and
 * a socket pair with data in flight, an anonymous pattern and a shared file
 * mapping, SIGUSR2 blocked and pending. It records its own fd table before it
 * is ready and checks it again after SIGUSR1: no fd more, no fd less.
 *
 * "rlimit-as": lowers its own RLIMIT_AS (soft) to 512 KiB above what it maps,
 * too little for the parasite (about 1 MiB), so every dump of it fails while
 * the parasite is being mapped. The limit is raised again after SIGUSR1. */
#include "prog_common.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define PATTERN (1u << 20)
#define MAX_FDS 64

static int list_fds(int* out) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent* e;
  while ((e = readdir(d)) && n < MAX_FDS) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd != dirfd(d)) out[n++] = fd;
  }
  closedir(d);
  return n;
}

static long vm_size_kb(void) {
  char buf[4096];
  int fd = open("/proc/self/status", O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
  if (fd >= 0) close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* line = strstr(buf, "VmSize:");
  return line ? atol(line + 7) : -1;
}

static unsigned char byte_at(size_t i, unsigned salt) { return (unsigned char)(prog_hash(i + salt) & 0xff); }

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: intact READY_FILE WORK_DIR [rlimit-as]\n"); return 2; }
  int lower_as = argc > 3 && strcmp(argv[3], "rlimit-as") == 0;
  prog_install_usr1();

  char path[4096];
  snprintf(path, sizeof(path), "%s/intact.data", argv[2]);
  int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (file < 0) { perror("open"); return 2; }
  unsigned char block[8192];
  for (size_t i = 0; i < sizeof(block); i++) block[i] = byte_at(i, 7);
  if (write(file, block, sizeof(block)) != (ssize_t)sizeof(block)) return 2;
  lseek(file, 123, SEEK_SET);
  const unsigned char* fmap = mmap(NULL, sizeof(block), PROT_READ, MAP_SHARED, file, 0);
  if (fmap == MAP_FAILED) return 2;

  int pipefd[2], sk[2];
  if (pipe(pipefd) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sk) != 0) return 2;
  unsigned char data[100];
  for (size_t i = 0; i < sizeof(data); i++) data[i] = byte_at(i, 8);
  if (write(pipefd[1], data, sizeof(data)) != (ssize_t)sizeof(data)) return 2;
  if (write(sk[0], data, sizeof(data)) != (ssize_t)sizeof(data)) return 2;

  uint64_t* pattern = mmap(NULL, PATTERN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pattern == MAP_FAILED) return 2;
  for (size_t i = 0; i < PATTERN / 8; i++) pattern[i] = prog_hash(i + 99);

  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR2);
  sigprocmask(SIG_BLOCK, &blocked, NULL);
  kill(getpid(), SIGUSR2); /* stays pending: a dump must neither lose nor deliver it */

  int fds_before[MAX_FDS];
  int nfds_before = list_fds(fds_before);
  if (nfds_before < 0) return 2;

  struct rlimit as = {RLIM_INFINITY, RLIM_INFINITY}, lowered;
  if (lower_as) {
    /* Whatever stdio and the ready file need, allocated before the limit. */
    free(malloc(256 << 10));
    FILE* warm = fopen("/dev/null", "w");
    if (warm) fclose(warm);
    long kb = vm_size_kb();
    if (kb <= 0 || getrlimit(RLIMIT_AS, &as) != 0) return 2;
    lowered.rlim_cur = (rlim_t)(kb + 512) << 10;
    lowered.rlim_max = as.rlim_max;
    if (setrlimit(RLIMIT_AS, &lowered) != 0) { perror("setrlimit"); return 2; }
  }

  prog_ready(argv[1]);
  prog_wait_usr1();

  if (lower_as) {
    struct rlimit now;
    CHECK(getrlimit(RLIMIT_AS, &now) == 0 && now.rlim_cur == lowered.rlim_cur, "RLIMIT_AS changed");
    setrlimit(RLIMIT_AS, &as);
  }
  int fds_after[MAX_FDS];
  int nfds_after = list_fds(fds_after);
  CHECK(nfds_after == nfds_before, "%d fds, %d before the dump", nfds_after, nfds_before);
  for (int i = 0; i < nfds_before && i < nfds_after; i++)
    CHECK(fds_after[i] == fds_before[i], "fd %d where fd %d was", fds_after[i], fds_before[i]);

  CHECK(lseek(file, 0, SEEK_CUR) == 123, "file offset %ld", (long)lseek(file, 0, SEEK_CUR));
  CHECK(memcmp(fmap, block, sizeof(block)) == 0, "shared file mapping contents");
  unsigned char got[sizeof(data)];
  CHECK(prog_read_exact(pipefd[0], got, sizeof(got)) == sizeof(got) && memcmp(got, data, sizeof(data)) == 0,
        "pipe data in flight");
  CHECK(prog_read_exact(sk[1], got, sizeof(got)) == sizeof(got) && memcmp(got, data, sizeof(data)) == 0,
        "socket data in flight");
  size_t bad = 0;
  for (size_t i = 0; i < PATTERN / 8; i++) bad += pattern[i] != prog_hash(i + 99);
  CHECK(bad == 0, "%zu words of the pattern differ", bad);

  sigset_t mask, pending;
  sigprocmask(SIG_BLOCK, NULL, &mask);
  sigpending(&pending);
  for (int sig = 1; sig < 32; sig++) {
    CHECK(sigismember(&mask, sig) == (sig == SIGUSR2), "signal %d %s in the mask", sig,
          sigismember(&mask, sig) ? "is" : "is not");
    CHECK(sigismember(&pending, sig) == (sig == SIGUSR2), "signal %d %s pending", sig,
          sigismember(&pending, sig) ? "is" : "is not");
  }
  return prog_finish();
}
