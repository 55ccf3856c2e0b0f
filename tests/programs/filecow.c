/* A private file mapping whose copied pages a parent and its child still
 * share copy-on-write: 16 MiB of a file mapped MAP_PRIVATE, the first 12 MiB
 * written by the parent before fork (its copies), the last 4 MiB only read
 * (the file's pages). After fork the child writes one page and the parent
 * another. After SIGUSR1 each checks what it should see, that the file never
 * took a write, and the child that the 12 MiB are still shared with its
 * parent (its own private dirty memory in the mapping stays small). */
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

static long private_dirty_kb(const void* addr) {
  FILE* f = fopen("/proc/self/smaps", "r");
  char line[512];
  long kb = -1;
  int in = 0;
  while (f && fgets(line, sizeof(line), f)) {
    unsigned long s, e;
    char c;
    if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && line[strspn(line, "0123456789abcdef")] == '-')
      in = s == (unsigned long)addr;
    else if (in && sscanf(line, "Private_Dirty: %ld kB", &kb) == 1)
      break;
  }
  if (f) fclose(f);
  return kb;
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
    long dirty = private_dirty_kb(m);
    /* Not shared, the child would hold its own copy of all 12 MiB written;
     * shared, only what it or its parent wrote since (a parent's write
     * leaves the old page to the child alone), and what the restore of the
     * parent touched after the fork: well under a third. */
    CHECK(dirty >= 0 && dirty < (long)(WRITTEN >> 10) / 3, "child: %ld kB private dirty: the copies are not shared",
          dirty);
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
