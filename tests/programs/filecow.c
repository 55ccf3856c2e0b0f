/* A private file mapping whose copied pages a parent and its child still
 * share copy-on-write: 16 MiB of a file mapped MAP_PRIVATE, the first 12 MiB
 * written by the parent before fork (its copies), the last 4 MiB only read
 * (the file's pages). After fork the child writes one page and the parent
 * another. After SIGUSR1 each checks what it should see, that the file never
 * took a write, and the child that the 12 MiB are still shared with its
 * parent (the copies it holds alone stay few). */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096
#define BIG (16u << 20)
#define WRITTEN (12u << 20)
#define WORDS (BIG / 8)
#define CHILD_WORD (WORDS / 2)
#define PARENT_WORD (WORDS / 4)

static uint64_t file_word(size_t i) { return prog_hash(i ^ 0xf11e); }
static uint64_t written_word(size_t i) { return prog_hash(i); }

static size_t check_map(const uint64_t* m, size_t mine, uint64_t value) {
  size_t bad = 0;
  for (size_t i = 0; i < WORDS; i++) {
    uint64_t want = i == mine ? value : i * 8 < WRITTEN ? written_word(i) : file_word(i);
    bad += m[i] != want;
  }
  return bad;
}

/* The kB of the copied part [m, m + WRITTEN) that this process holds alone:
 * anonymous pages (the mapping's copies, not the file's pages) mapped
 * exclusively, from /proc/self/pagemap (bit 63 present, 61 file or shared
 * anonymous, 56 mapped exclusively). smaps' Private_Dirty would also count
 * the file's own dirty page-cache pages that only this process maps yet. */
static long exclusive_copies_kb(const void* m) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return -1;
  static uint64_t ent[WRITTEN / PG];
  ssize_t want = (ssize_t)sizeof ent;
  ssize_t got = pread(fd, ent, sizeof ent, (off_t)((uintptr_t)m / PG * 8));
  close(fd);
  if (got != want) return -1;
  long pages = 0;
  for (size_t i = 0; i < WRITTEN / PG; i++)
    pages += (ent[i] >> 63 & 1) && !(ent[i] >> 61 & 1) && (ent[i] >> 56 & 1);
  return pages * (PG / 1024);
}

static int file_intact(const char* path) {
  int fd = open(path, O_RDONLY);
  static uint64_t buf[WORDS];
  size_t got = fd >= 0 ? prog_read_exact(fd, buf, BIG) : 0;
  if (fd >= 0) close(fd);
  if (got != BIG) return 0;
  for (size_t i = 0; i < WORDS; i++)
    if (buf[i] != file_word(i)) return 0;
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char path[4096];
  snprintf(path, sizeof path, "%s/filecow.data", argv[2]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  static uint64_t buf[WORDS];
  for (size_t i = 0; i < WORDS; i++) buf[i] = file_word(i);
  if (fd < 0 || write(fd, buf, BIG) != (ssize_t)BIG) return 2;
  uint64_t* m = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return 2;
  for (size_t i = 0; i < WRITTEN / 8; i++) m[i] = written_word(i);
  volatile uint64_t sum = 0;
  for (size_t i = WRITTEN / 8; i < WORDS; i += PG / 8) sum += m[i];  /* the file's pages, mapped */

  int ready[2];
  if (pipe(ready)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    m[CHILD_WORD] = 0xc41d;
    if (write(ready[1], "r", 1) != 1) return 3;
    close(ready[1]);
    prog_wait_usr1();
    CHECK(check_map(m, CHILD_WORD, 0xc41d) == 0, "child: the mapping differs");
    long own = exclusive_copies_kb(m);
    /* Not shared, the child would hold its own copy of all 12 MiB written;
     * shared, only the pages it or its parent wrote since the fork (a
     * parent's write leaves the old page to the child alone): two pages,
     * with room for a few more, never a share of the 12 MiB. */
    CHECK(own >= 0 && own <= 256, "child: %ld kB of the copies its own: they are not shared", own);
    return prog_finish();
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1) return 2;
  close(ready[0]);
  m[PARENT_WORD] = 0x9a7e;
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  CHECK(check_map(m, PARENT_WORD, 0x9a7e) == 0, "parent: the mapping differs");
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  CHECK(file_intact(path), "the file took a write of a private mapping");
  return prog_finish();
}
