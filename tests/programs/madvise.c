/* VMAs with madvise advice, mlock and mseal: one region of anonymous memory
 * per flag (MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, MADV_HUGEPAGE,
 * MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_SEQUENTIAL, MADV_RANDOM, mlock,
 * mlock2(MLOCK_ONFAULT), mseal, MAP_NORESERVE), each between PROT_NONE guards,
 * each with its own bytes. Their VmFlags lines of /proc/self/smaps are kept
 * before the dump; after SIGUSR1 each must read the same, the bytes must be
 * there, and the flags must still act: a child forked then lacks the
 * DONTFORK region and reads zeros in the WIPEONFORK one, the mlocked region
 * is locked whole and the MLOCK_ONFAULT one only where it was touched, the
 * sealed one cannot be unmapped.
 * With "droppable" (argv[3]) it also holds MAP_DROPPABLE memory, with "pkey"
 * a page under a memory protection key (pkey_mprotect), both of which the
 * dump refuses: the program must then run on unharmed. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096
#define PAGES 4

enum { DONTFORK, WIPEONFORK, DONTDUMP, HUGEPAGE, NOHUGEPAGE, MERGEABLE, SEQUENTIAL, RANDOM,
       LOCKED, LOCKONFAULT, SEALED, NORESERVE, REGIONS };
static const char* names[REGIONS] = {"dontfork", "wipeonfork", "dontdump", "hugepage", "nohugepage",
                                     "mergeable", "sequential", "random", "locked", "lockonfault",
                                     "sealed", "noreserve"};
static char* region[REGIONS];
static char flags_before[REGIONS][256];

/* The VmFlags line and the Locked: kB of the VMA that starts at addr. */
static int smaps_of(const void* addr, char* flags, size_t n, long* locked_kb) {
  FILE* f = fopen("/proc/self/smaps", "r");
  char line[512];
  int in = 0, found = 0;
  unsigned long want = (unsigned long)addr;
  while (f && fgets(line, sizeof(line), f)) {
    unsigned long s, e;
    char c;
    if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && line[strspn(line, "0123456789abcdef")] == '-') {
      in = s == want;
      found |= in;
    } else if (in && locked_kb && sscanf(line, "Locked: %ld kB", locked_kb) == 1) {
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      snprintf(flags, n, "%s", line);
    }
  }
  if (f) fclose(f);
  return found;
}

static char byte_of(int r, int p) { return (char)(r * 16 + p + 1); }

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  /* One reservation, carved: guard, region, guard, region... */
  size_t stride = (PAGES + 1) * PG;
  char* base = mmap(NULL, stride * REGIONS + PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return 2;
  for (int r = 0; r < REGIONS; r++) {
    int extra = r == NORESERVE ? MAP_NORESERVE : 0;
    region[r] = mmap(base + PG + r * stride, PAGES * PG, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | extra, -1, 0);
    if (region[r] == MAP_FAILED) return 2;
  }
  static const int advice[REGIONS] = {MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, MADV_HUGEPAGE,
                                      MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_SEQUENTIAL, MADV_RANDOM};
  for (int r = 0; r <= RANDOM; r++)
    if (madvise(region[r], PAGES * PG, advice[r])) { perror(names[r]); return 2; }
  for (int r = 0; r < REGIONS; r++)
    if (r != LOCKONFAULT)
      for (int p = 0; p < PAGES; p++) memset(region[r] + p * PG, byte_of(r, p), PG);
  if (mlock(region[LOCKED], PAGES * PG)) { perror("mlock"); return 2; }
  if (mlock2(region[LOCKONFAULT], PAGES * PG, MLOCK_ONFAULT)) { perror("mlock2"); return 2; }
  memset(region[LOCKONFAULT], byte_of(LOCKONFAULT, 0), PG);  /* one page of four faulted */
  if (syscall(462 /* mseal */, region[SEALED], PAGES * PG, 0)) { perror("mseal"); return 2; }
  for (int r = 0; r < REGIONS; r++)
    if (!smaps_of(region[r], flags_before[r], sizeof(flags_before[r]), NULL)) return 2;

  char* droppable = NULL;
  if (argc > 3 && strcmp(argv[3], "droppable") == 0) {
    droppable = mmap(NULL, PG, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE, a mapping type */ | MAP_ANONYMOUS, -1, 0);
    if (droppable == MAP_FAILED) { perror("MAP_DROPPABLE"); return 2; }
  }
  if (argc > 3 && strcmp(argv[3], "pkey") == 0) {
    char* keyed = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int key = pkey_alloc(0, 0);
    if (keyed == MAP_FAILED || key < 0 || pkey_mprotect(keyed, PG, PROT_READ | PROT_WRITE, key)) {
      perror("pkey");
      return 2;
    }
  }

  prog_ready(argv[1]);
  prog_wait_usr1();

  for (int r = 0; r < REGIONS; r++) {
    char now[256] = "";
    long locked = -1;
    CHECK(smaps_of(region[r], now, sizeof(now), &locked), "%s: no VMA at %p", names[r], region[r]);
    CHECK(strcmp(now, flags_before[r]) == 0, "%s: %s was %s", names[r], now, flags_before[r]);
    int pages = r == LOCKONFAULT ? 1 : PAGES;
    for (int p = 0; p < pages; p++)
      CHECK(region[r][p * PG] == byte_of(r, p) && region[r][p * PG + PG - 1] == byte_of(r, p),
            "%s: page %d", names[r], p);
    if (r == LOCKED) CHECK(locked == PAGES * PG / 1024, "locked: %ld kB locked", locked);
    if (r == LOCKONFAULT) CHECK(locked == PG / 1024, "lockonfault: %ld kB locked (one page touched)", locked);
  }
  errno = 0;
  CHECK(munmap(region[SEALED], PAGES * PG) != 0 && errno == EPERM, "sealed: munmap is not refused (%d)", errno);
  errno = 0;
  CHECK(mprotect(region[SEALED], PAGES * PG, PROT_READ) != 0 && errno == EPERM,
        "sealed: mprotect is not refused (%d)", errno);

  pid_t child = fork();
  if (child == 0) {
    char f[256];
    CHECK(!smaps_of(region[DONTFORK], f, sizeof(f), NULL), "child: the DONTFORK region was inherited");
    int zeros = 1;
    for (int i = 0; i < PAGES * PG; i++) zeros &= region[WIPEONFORK][i] == 0;
    CHECK(zeros, "child: the WIPEONFORK region was not wiped");
    CHECK(region[DONTDUMP][0] == byte_of(DONTDUMP, 0), "child: an ordinary region");
    return prog_finish();
  }
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
