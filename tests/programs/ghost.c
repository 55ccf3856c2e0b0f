/* Ghost files: open files whose last name is gone.
 *   ghost READY DIR shared  - a 64 MiB pool file mapped MAP_SHARED by a parent and
 *                             its child, each writing its half, plus an fd at an
 *                             offset; unlinked once both mapped it (as MPI does).
 *   ghost READY DIR sparse  - a 1 GiB file with 1 MiB of data (and a page at 0),
 *                             unlinked, held by an fd.
 * After SIGUSR1 each process checks the contents, that writes still cross
 * between the two processes, that the file is still unlinked, and the offset. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define POOL (64u << 20)
#define SPARSE (1ull << 30)
#define SPARSE_DATA_AT (512ull << 20)
#define SPARSE_DATA (1u << 20)

static int shared_mode(const char* ready, const char* dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/pool", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, POOL) != 0) return 2;
  uint64_t* pool = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (pool == MAP_FAILED) return 2;
  volatile uint64_t* flags = pool; /* word 0: child ready, 1: token, 2: child ack */
  size_t half = POOL / 16;         /* words per half */
  lseek(fd, 12345, SEEK_SET);
  pid_t child = fork();
  if (child == 0) {
    for (size_t i = 8; i < half; i++) pool[half + i] = prog_hash(i + 777);
    __atomic_store_n(&flags[0], 1, __ATOMIC_SEQ_CST);
    prog_wait_usr1();
    size_t bad = 0;
    for (size_t i = 8; i < half; i++) bad += pool[i] != prog_hash(i);
    CHECK(bad == 0, "child: %zu words of the parent's half differ", bad);
    /* The parent writes a token after restore; we must see it. */
    for (int i = 0; i < 5000 && __atomic_load_n(&flags[1], __ATOMIC_SEQ_CST) != 0xabcdef; i++) usleep(1000);
    CHECK(flags[1] == 0xabcdef, "child: the parent's write after restore is not seen");
    __atomic_store_n(&flags[2], 0x123456, __ATOMIC_SEQ_CST);
    return prog_finish();
  }
  for (size_t i = 8; i < half; i++) pool[i] = prog_hash(i);
  while (!__atomic_load_n(&flags[0], __ATOMIC_SEQ_CST)) usleep(1000);
  unlink(path);
  prog_ready(ready);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  size_t bad = 0;
  for (size_t i = 8; i < half; i++) bad += pool[half + i] != prog_hash(i + 777);
  CHECK(bad == 0, "parent: %zu words of the child's half differ", bad);
  __atomic_store_n(&flags[1], 0xabcdef, __ATOMIC_SEQ_CST);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child, "waitpid");
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %#x", status);
  CHECK(flags[2] == 0x123456, "the child's write is not seen");
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0, "the pool file has a name again");
  CHECK(st.st_size == POOL, "pool size %ld", (long)st.st_size);
  CHECK(lseek(fd, 0, SEEK_CUR) == 12345, "offset %ld", (long)lseek(fd, 0, SEEK_CUR));
  /* The fd and the mapping are the same file. */
  uint64_t word;
  CHECK(pread(fd, &word, 8, 8 * 100) == 8 && word == prog_hash(100), "fd and mapping disagree");
  return prog_finish();
}

static int sparse_mode(const char* ready, const char* dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/sparse", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, (off_t)SPARSE) != 0) return 2;
  char* buf = malloc(SPARSE_DATA);
  for (size_t i = 0; i < SPARSE_DATA; i++) buf[i] = (char)prog_hash(i);
  if (pwrite(fd, buf, SPARSE_DATA, (off_t)SPARSE_DATA_AT) != SPARSE_DATA) return 2;
  if (pwrite(fd, "head", 4, 0) != 4) return 2;
  unlink(path);
  struct stat before;
  fstat(fd, &before);
  lseek(fd, 4, SEEK_SET);
  prog_ready(ready);
  prog_wait_usr1();
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0, "the sparse file has a name again");
  CHECK(st.st_size == (off_t)SPARSE, "size %ld", (long)st.st_size);
  /* Holes stay holes: no more blocks than before, give or take a page per run. */
  CHECK(st.st_blocks <= before.st_blocks + 3 * 8, "blocks %ld, were %ld", (long)st.st_blocks,
        (long)before.st_blocks);
  char* got = malloc(SPARSE_DATA);
  CHECK(pread(fd, got, SPARSE_DATA, (off_t)SPARSE_DATA_AT) == SPARSE_DATA, "read data");
  CHECK(memcmp(got, buf, SPARSE_DATA) == 0, "data differs");
  char head[5] = {0};
  CHECK(pread(fd, head, 4, 0) == 4 && strcmp(head, "head") == 0, "head '%s'", head);
  CHECK(lseek(fd, 0, SEEK_CUR) == 4, "offset");
  char zero[4096], zeros[4096] = {0};
  CHECK(pread(fd, zero, 4096, 1 << 20) == 4096 && memcmp(zero, zeros, 4096) == 0, "a hole reads non-zero");
  return prog_finish();
}

/* linked: a file whose name was unlinked while another survives, in the same
 * directory (same) or elsewhere (other). */
static int linked_mode(const char* ready, const char* dir, int elsewhere) {
  char path[4096], other[4096];
  snprintf(path, sizeof(path), "%s/first", dir);
  snprintf(other, sizeof(other), elsewhere ? "%s/sub/second" : "%s/second", dir);
  if (elsewhere) {
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    mkdir(sub, 0700);
  }
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, "0123456789", 10) != 10 || link(path, other) != 0) return 2;
  unlink(path);
  lseek(fd, 3, SEEK_SET);
  prog_ready(ready);
  prog_wait_usr1();
  char c;
  CHECK(read(fd, &c, 1) == 1 && c == '3', "offset or contents");
  struct stat st, by_name;
  CHECK(fstat(fd, &st) == 0 && stat(other, &by_name) == 0 && st.st_ino == by_name.st_ino,
        "not the file the surviving name names");
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 4) { fprintf(stderr, "usage: ghost READY DIR shared|sparse\n"); return 2; }
  prog_install_usr1();
  if (strcmp(argv[3], "shared") == 0) return shared_mode(argv[1], argv[2]);
  if (strcmp(argv[3], "sparse") == 0) return sparse_mode(argv[1], argv[2]);
  if (strcmp(argv[3], "linked-same") == 0) return linked_mode(argv[1], argv[2], 0);
  if (strcmp(argv[3], "linked-other") == 0) return linked_mode(argv[1], argv[2], 1);
  return 2;
}
