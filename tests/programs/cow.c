/* Memory still shared copy-on-write between a parent and its child: 64 MiB
 * filled by the parent before fork; after fork the child changes one page and
 * the parent another. After SIGUSR1 each checks the contents it should see,
 * and the child that the 64 MiB are still shared with its parent (its own
 * private dirty memory stays small), as after the fork. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define BIG (64u << 20)
#define WORDS (BIG / 8)
#define CHILD_WORD (WORDS / 2)
#define PARENT_WORD (WORDS / 4)

static size_t check_big(const uint64_t* big, size_t mine, uint64_t value) {
  size_t bad = 0;
  for (size_t i = 0; i < WORDS; i++) bad += big[i] != (i == mine ? value : prog_hash(i));
  return bad;
}

static long private_dirty_kb(void) {
  FILE* f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "Private_Dirty: %ld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  uint64_t* big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < WORDS; i++) big[i] = prog_hash(i);
  int ready[2];
  if (pipe(ready)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    big[CHILD_WORD] = 0xc41d;
    if (write(ready[1], "r", 1) != 1) return 3;
    close(ready[1]);
    prog_wait_usr1();
    CHECK(check_big(big, CHILD_WORD, 0xc41d) == 0, "child: the memory differs");
    long dirty = private_dirty_kb();
    CHECK(dirty >= 0 && dirty < 16 * 1024, "child: %ld kB private dirty: the 64 MiB are not shared", dirty);
    return prog_finish();
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1) return 2;
  close(ready[0]);
  big[PARENT_WORD] = 0x9a7e;
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  CHECK(check_big(big, PARENT_WORD, 0x9a7e) == 0, "parent: the memory differs");
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
