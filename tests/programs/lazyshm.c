/* Lazy restore of shared memory: a parent and its child share MIB MiB of
 * MAP_SHARED|MAP_ANONYMOUS memory, a 32 MiB memfd mapped in both and a 16 MiB
 * System V segment (attached by the parent, inherited by the child, removed
 * with IPC_RMID); each word holds its index plus the object's seed.
 *
 *   lazyshm READY_FILE DIR MIB [MODE]
 *
 * MODE "fd": the memfd's fd stays open in the parent (a read(2) does not
 * fault, so minicriu restores that object eagerly); after restore the parent
 * also checks it with pread. Otherwise the fd is closed once mapped.
 *
 * MODE "events": after the handshake, in the lazy phase, the parent forks a
 * grandchild that verifies every word of its copies of the mappings, moves
 * 2 MiB of the shared anonymous memory away and back (mremap, its words
 * checked at both places), madvise(DONTNEED)s 1 MiB of it (shared memory
 * keeps its data: the words read as before) and munmaps 1 MiB (which the
 * child, still mapping it, verifies).
 *
 * A watcher thread ticks every millisecond; the first tick after a gap of
 * more than 100 ms (the dump, the restore: the restored process's first
 * instructions) counts the pages of the shared anonymous memory and of the
 * memfd that are in (mincore: the object's page cache) and writes
 * "ANON_IN ANON_PAGES MEMFD_IN MEMFD_PAGES" to DIR/lazyshm.resident, and
 * the CLOCK_REALTIME time to DIR/lazy.stamp (bench/lazy_bench, shm).
 *
 * On SIGUSR1 the parent passes it on to the child; then, early in the lazy
 * phase, the parent writes a word in each object that the child waits for,
 * and the child answers in another word that the parent waits for (each
 * sees the other's write); then both verify every word of the three
 * objects. The parent exits 0 only if both found every word as it was. */
#include "prog_common.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define MEMFD_MIB 32
#define SYSV_MIB 16

struct object {
  const char* name;
  uint64_t* mem;
  size_t words;
  uint64_t seed;
  size_t ask, answer; /* the words of the handshake */
};
static struct object objs[3];
static char resident_file[4096], stamp_file[4096];
static int is_child;

static uint64_t expected(const struct object* o, size_t i) {
  if (i == o->ask) return 0xa5a5a5a5a5a5a5a5ull ^ o->seed;
  if (i == o->answer) return 0x5a5a5a5a5a5a5a5aull ^ o->seed;
  return i + o->seed;
}

static size_t in_core(void* p, size_t len) {
  size_t pages = len / 4096, n = 0;
  unsigned char* v = malloc(pages);
  if (!v || mincore(p, len, v) != 0) {
    free(v);
    return (size_t)-1;
  }
  for (size_t i = 0; i < pages; i++) n += v[i] & 1;
  free(v);
  return n;
}

/* At the first instruction after the restore: how much of each object is in. */
static void write_resident(void) {
  char buf[128];
  int n = snprintf(buf, sizeof(buf), "%zu %zu %zu %zu\n", in_core(objs[0].mem, objs[0].words * 8),
                   objs[0].words * 8 / 4096, in_core(objs[1].mem, objs[1].words * 8), objs[1].words * 8 / 4096);
  int fd = open(resident_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    (void)!write(fd, buf, (size_t)n);
    close(fd);
  }
}

/* Waits up to 30 s for *w to read want. */
static int wait_word(volatile uint64_t* w, uint64_t want) {
  for (int i = 0; i < 30000; i++) {
    if (*w == want) return 1;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

static size_t skip_from, skip_to; /* words of objs[0] the parent unmapped */

static size_t verify(const struct object* o) {
  size_t bad = 0;
  for (size_t i = 0; i < o->words; i++) {
    if (o == &objs[0] && i >= skip_from && i < skip_to) continue;
    if (o->mem[i] != expected(o, i)) {
      if (bad < 3)
        fprintf(stderr, "%s %s: word %zu reads %#llx, not %#llx\n", is_child ? "child" : "parent", o->name, i,
                (unsigned long long)o->mem[i], (unsigned long long)expected(o, i));
      bad++;
    }
  }
  return bad;
}

/* The fork, mremap, madvise and munmap of MODE events, in objs[0] (MIB MiB,
 * at 3/4 of it: pages the prefetch, which went on from the handshake's last
 * MiB and then from the start, has not reached yet). */
static void events(void) {
  struct object* o = &objs[0];
  size_t mib_words = (1u << 20) / 8;
  size_t at = (o->words / 4 * 3) & ~(mib_words - 1);
  pid_t g = fork();
  if (g == 0) {
    size_t bad = 0;
    for (int k = 0; k < 3; k++) bad += verify(&objs[k]);
    _exit(bad ? 1 : 0);
  }
  CHECK(g > 0, "fork: %s", strerror(errno));
  uint64_t* from = o->mem + at;
  void* to = mmap(NULL, 2u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* moved = mremap(from, 2u << 20, 2u << 20, MREMAP_MAYMOVE | MREMAP_FIXED, to);
  CHECK(moved == to, "mremap away: %s", strerror(errno));
  if (moved == to) {
    uint64_t* m = moved;
    for (size_t i = 0; i < 2 * mib_words; i++)
      if (m[i] != expected(o, at + i)) {
        CHECK(0, "moved word %zu reads %#llx", at + i, (unsigned long long)m[i]);
        break;
      }
    void* back = mremap(moved, 2u << 20, 2u << 20, MREMAP_MAYMOVE | MREMAP_FIXED, from);
    CHECK(back == from, "mremap back: %s", strerror(errno));
  }
  uint64_t* dn = o->mem + at + 3 * mib_words;
  (void)*(volatile uint64_t*)dn;
  CHECK(madvise(dn, 1u << 20, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
  skip_from = at + 5 * mib_words;
  skip_to = skip_from + mib_words;
  CHECK(munmap(o->mem + skip_from, 1u << 20) == 0, "munmap: %s", strerror(errno));
  int st = 0;
  CHECK(g > 0 && waitpid(g, &st, 0) == g && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the grandchild saw %#x", st);
}

int main(int argc, char** argv) {
  if (argc < 4) return 100;
  snprintf(resident_file, sizeof(resident_file), "%s/lazyshm.resident", argv[2]);
  snprintf(stamp_file, sizeof(stamp_file), "%s/lazy.stamp", argv[2]);
  size_t mib = strtoull(argv[3], NULL, 0);
  int keep_fd = argc > 4 && strcmp(argv[4], "fd") == 0;
  int events_mode = argc > 4 && strcmp(argv[4], "events") == 0;
  size_t sizes[3] = {mib << 20, (size_t)MEMFD_MIB << 20, (size_t)SYSV_MIB << 20};
  const char* names[3] = {"shared anonymous memory", "memfd", "System V segment"};

  objs[0].mem = mmap(NULL, sizes[0], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (objs[0].mem == MAP_FAILED) return 101;
  int mfd = memfd_create("lazyshm", MFD_CLOEXEC);
  if (mfd < 0 || ftruncate(mfd, (off_t)sizes[1]) != 0) return 102;
  objs[1].mem = mmap(NULL, sizes[1], PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (objs[1].mem == MAP_FAILED) return 103;
  if (!keep_fd) close(mfd);
  int shmid = shmget(IPC_PRIVATE, sizes[2], IPC_CREAT | 0600);
  if (shmid < 0) return 104;
  objs[2].mem = shmat(shmid, NULL, 0);
  if (objs[2].mem == (void*)-1) return 105;
  for (int k = 0; k < 3; k++) {
    struct object* o = &objs[k];
    o->name = names[k];
    o->words = sizes[k] / 8;
    o->seed = 0x1000000000ull * (uint64_t)(k + 1) + 0x1234;
    /* Words in the last MiB: pages the prefetch reaches last. */
    o->ask = o->words - (1u << 20) / 8 + 512 * 3;
    o->answer = o->words - (1u << 20) / 8 + 512 * 7;
    for (size_t i = 0; i < o->words; i++) o->mem[i] = i + o->seed;
  }
  prog_install_usr1();
  pid_t child = fork();
  if (child < 0) return 106;
  if (child == 0) {
    is_child = 1;
    prog_wait_usr1();
    for (int k = 0; k < 3; k++) {
      struct object* o = &objs[k];
      CHECK(wait_word(&o->mem[o->ask], expected(o, o->ask)), "child: %s: the parent's write never came", o->name);
      o->mem[o->answer] = expected(o, o->answer);
    }
    size_t bad = 0;
    for (int k = 0; k < 3; k++) bad += verify(&objs[k]);
    CHECK(bad == 0, "child: %zu word(s) differ", bad);
    _exit(prog_failures ? 1 : 0);
  }
  /* Removed, still attached by both: it goes with its last detach. */
  if (shmctl(shmid, IPC_RMID, NULL) != 0) return 107;
  prog_start_gap_watcher(stamp_file, write_resident);
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  for (int k = 0; k < 3; k++) {
    struct object* o = &objs[k];
    o->mem[o->ask] = expected(o, o->ask);
  }
  for (int k = 0; k < 3; k++) {
    struct object* o = &objs[k];
    CHECK(wait_word(&o->mem[o->answer], expected(o, o->answer)), "parent: %s: the child's answer never came",
          o->name);
  }
  if (events_mode) events();
  size_t bad = 0;
  for (int k = 0; k < 3; k++) bad += verify(&objs[k]);
  CHECK(bad == 0, "parent: %zu word(s) differ", bad);
  if (keep_fd) {
    /* Through the fd: what the mapping holds. */
    uint64_t v[512];
    for (size_t at = 0; at < objs[1].words; at += 512 * 64) {
      CHECK(pread(mfd, v, sizeof(v), (off_t)(at * 8)) == (ssize_t)sizeof(v), "pread: %s", strerror(errno));
      for (size_t i = 0; i < 512; i++)
        if (v[i] != expected(&objs[1], at + i)) {
          CHECK(0, "pread of the memfd: word %zu reads %#llx", at + i, (unsigned long long)v[i]);
          break;
        }
    }
  }
  int st = 0;
  CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child exited with %#x", st);
  return prog_failures ? 1 : 0;
}
