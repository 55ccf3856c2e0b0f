/* One process holding one of each shared kind, for restore: a pipe with bytes
 * in flight (both ends), a fifo with bytes queued, a sealed memfd mapped shared
 * and held at an offset, shared anonymous memory, and a ghost file (unlinked)
 * mapped shared and held at an offset. After SIGUSR1 it checks all of it. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PIPE_BYTES 20000
#define FIFO_BYTES 1000
#define MEMFD (4u << 20)
#define ANON (8u << 20)
#define GHOST (8u << 20)

static unsigned char byte_at(size_t i, unsigned salt) { return (unsigned char)(prog_hash(i + salt) & 0xff); }

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char path[4096];

  int p[2];
  if (pipe(p)) return 2;
  unsigned char buf[PIPE_BYTES];
  for (size_t i = 0; i < PIPE_BYTES; i++) buf[i] = byte_at(i, 1);
  if (write(p[1], buf, PIPE_BYTES) != PIPE_BYTES) return 2;

  snprintf(path, sizeof(path), "%s/kinds.fifo", argv[2]);
  if (mkfifo(path, 0600)) return 2;
  int fifo_r = open(path, O_RDONLY | O_NONBLOCK);
  int fifo_w = open(path, O_WRONLY);
  for (size_t i = 0; i < FIFO_BYTES; i++) buf[i] = byte_at(i, 2);
  if (fifo_r < 0 || fifo_w < 0 || write(fifo_w, buf, FIFO_BYTES) != FIFO_BYTES) return 2;

  int mfd = memfd_create("kinds", MFD_ALLOW_SEALING);
  if (mfd < 0 || ftruncate(mfd, MEMFD)) return 2;
  uint64_t* mem = mmap(NULL, MEMFD, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  for (size_t i = 0; i < MEMFD / 8; i++) mem[i] = prog_hash(i + 3);
  fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  lseek(mfd, 100, SEEK_SET);

  uint64_t* anon = mmap(NULL, ANON, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < ANON / 8; i++) anon[i] = prog_hash(i + 4);

  snprintf(path, sizeof(path), "%s/kinds.ghost", argv[2]);
  int gfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
  if (gfd < 0 || ftruncate(gfd, GHOST)) return 2;
  uint64_t* ghost = mmap(NULL, GHOST, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
  for (size_t i = 0; i < GHOST / 8; i += 512) ghost[i] = prog_hash(i + 5); /* one word a page */
  unlink(path);
  lseek(gfd, 77, SEEK_SET);

  prog_ready(argv[1]);
  prog_wait_usr1();

  unsigned char got[PIPE_BYTES];
  CHECK(read(p[0], got, PIPE_BYTES) == PIPE_BYTES, "pipe bytes");
  size_t bad = 0;
  for (size_t i = 0; i < PIPE_BYTES; i++) bad += got[i] != byte_at(i, 1);
  CHECK(bad == 0, "pipe: %zu bytes differ", bad);
  CHECK(write(p[1], "x", 1) == 1 && read(p[0], got, 1) == 1 && got[0] == 'x', "pipe still carries");

  CHECK(read(fifo_r, got, FIFO_BYTES + 10) == FIFO_BYTES, "fifo bytes");
  bad = 0;
  for (size_t i = 0; i < FIFO_BYTES; i++) bad += got[i] != byte_at(i, 2);
  CHECK(bad == 0, "fifo: %zu bytes differ", bad);
  CHECK(fcntl(fifo_r, F_GETFL) & O_NONBLOCK, "fifo read end lost O_NONBLOCK");

  bad = 0;
  for (size_t i = 0; i < MEMFD / 8; i++) bad += mem[i] != prog_hash(i + 3);
  CHECK(bad == 0, "memfd: %zu words differ", bad);
  CHECK(fcntl(mfd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "memfd seals %#x", fcntl(mfd, F_GET_SEALS));
  CHECK(lseek(mfd, 0, SEEK_CUR) == 100, "memfd offset");
  mem[1] = 0xabc;
  uint64_t word = 0;
  CHECK(pread(mfd, &word, 8, 8) == 8 && word == 0xabc, "memfd fd and mapping are not one object");

  bad = 0;
  for (size_t i = 0; i < ANON / 8; i++) bad += anon[i] != prog_hash(i + 4);
  CHECK(bad == 0, "shared anonymous: %zu words differ", bad);

  struct stat st;
  CHECK(fstat(gfd, &st) == 0 && st.st_nlink == 0, "the ghost has a name");
  CHECK(st.st_size == GHOST, "ghost size");
  bad = 0;
  for (size_t i = 0; i < GHOST / 8; i += 512) bad += ghost[i] != prog_hash(i + 5);
  CHECK(bad == 0, "ghost: %zu words differ", bad);
  CHECK(lseek(gfd, 0, SEEK_CUR) == 77, "ghost offset");
  ghost[1] = 0xdef;
  CHECK(pread(gfd, &word, 8, 8) == 8 && word == 0xdef, "ghost fd and mapping are not one file");
  return prog_finish();
}
