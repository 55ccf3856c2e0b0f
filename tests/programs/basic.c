/* A single-threaded process with a known memory pattern (heap and a large
 * anonymous mapping), a file open at an offset, a read-only mapping of that
 * file, and a counter that keeps running. After SIGUSR1 it checks all of it. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BIG (32u << 20)

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: basic READY_FILE WORK_DIR\n"); return 2; }
  prog_install_usr1();
  pid_t pid = getpid();

  char path[4096];
  snprintf(path, sizeof(path), "%s/basic.data", argv[2]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) { perror("open"); return 2; }
  char block[1000];
  for (int i = 0; i < 1000; i++) block[i] = (char)('a' + i % 26);
  if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block)) return 2;
  lseek(fd, 777, SEEK_SET);
  int dupfd = dup(fd); /* shares the offset with fd */

  uint64_t* big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (big == MAP_FAILED) return 2;
  for (size_t i = 0; i < BIG / 8; i++) big[i] = prog_hash(i);
  uint64_t* heap = malloc(100000 * sizeof(uint64_t));
  for (size_t i = 0; i < 100000; i++) heap[i] = prog_hash(i + 12345);
  /* A page that stays unreadable: dumped through /proc/PID/mem. */
  uint64_t* guarded = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  guarded[7] = 0xfeedface;
  mprotect(guarded, 4096, PROT_NONE);
  const char* fmap = mmap(NULL, 1000, PROT_READ, MAP_SHARED, fd, 0);

  /* "netns": live in a network namespace of its own, as in a container. */
  if (argc > 3 && strcmp(argv[3], "netns") == 0 && unshare(CLONE_NEWNET) != 0) return 2;
  /* "listen": hold a unix socket listening on DIR/listen.sock. */
  if (argc > 3 && strcmp(argv[3], "listen") == 0) {
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/listen.sock", argv[2]);
    if (ls < 0 || bind(ls, (struct sockaddr*)&addr, sizeof(addr)) != 0 || listen(ls, 1) != 0) return 2;
  }

  /* "unsupported": hold a vsock socket, a kind the dump must refuse (not
   * supported yet). */
  if (argc > 3 && strcmp(argv[3], "unsupported") == 0 && socket(AF_VSOCK, SOCK_STREAM, 0) < 0) return 2;

  volatile uint64_t counter = 0;
  prog_ready(argv[1]);
  while (!prog_usr1) {
    counter++;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  uint64_t at_signal = counter;

  CHECK(getpid() == pid, "getpid %d, was %d", getpid(), pid);
  CHECK(syscall(SYS_getpid) == pid, "raw getpid changed");
  size_t bad = 0;
  for (size_t i = 0; i < BIG / 8; i++) bad += big[i] != prog_hash(i);
  CHECK(bad == 0, "%zu words of the big mapping differ", bad);
  bad = 0;
  for (size_t i = 0; i < 100000; i++) bad += heap[i] != prog_hash(i + 12345);
  CHECK(bad == 0, "%zu words of the heap differ", bad);
  mprotect(guarded, 4096, PROT_READ);
  CHECK(guarded[7] == 0xfeedface, "unreadable page lost its contents");
  CHECK(lseek(fd, 0, SEEK_CUR) == 777, "offset %ld", (long)lseek(fd, 0, SEEK_CUR));
  char got[10];
  CHECK(read(dupfd, got, 10) == 10, "read through the dup'd fd");
  CHECK(memcmp(got, block + 777, 10) == 0, "file contents at the offset");
  CHECK(lseek(fd, 0, SEEK_CUR) == 787, "dup'd fds no longer share the offset");
  CHECK(memcmp(fmap, block, 1000) == 0, "shared file mapping contents");
  CHECK(at_signal > 0, "the counter never ran");
  /* The counter keeps running after the dump. */
  uint64_t before = counter;
  for (int i = 0; i < 10; i++) counter++;
  CHECK(counter == before + 10, "counter arithmetic");
  return prog_finish();
}
