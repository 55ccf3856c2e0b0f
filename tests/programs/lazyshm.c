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
 * A watcher thread ticks every millisecond; the first tick after a gap of
 * more than 100 ms (the dump, the restore: the restored process's first
 * instructions) counts the pages of the shared anonymous memory and of the
 * memfd that are in (mincore: the object's page cache) and writes
 * "ANON_IN ANON_PAGES MEMFD_IN MEMFD_PAGES" to DIR/lazyshm.resident.
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
static char resident_file[4096];
static volatile int stamped;
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

static void* watcher(void* arg) {
  (void)arg;
  struct timespec last, now;
  clock_gettime(CLOCK_MONOTONIC, &last);
  for (;;) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t gap = (now.tv_sec - last.tv_sec) * 1000000000ll + (now.tv_nsec - last.tv_nsec);
    last = now;
    if (gap > 100 * 1000000ll && !stamped) {
      stamped = 1;
      char buf[128];
      int n = snprintf(buf, sizeof(buf), "%zu %zu %zu %zu\n", in_core(objs[0].mem, objs[0].words * 8),
                       objs[0].words * 8 / 4096, in_core(objs[1].mem, objs[1].words * 8), objs[1].words * 8 / 4096);
      int fd = open(resident_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        (void)!write(fd, buf, (size_t)n);
        close(fd);
      }
    }
  }
  return NULL;
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

static size_t verify(const struct object* o) {
  size_t bad = 0;
  for (size_t i = 0; i < o->words; i++)
    if (o->mem[i] != expected(o, i)) {
      if (bad < 3)
        fprintf(stderr, "%s %s: word %zu reads %#llx, not %#llx\n", is_child ? "child" : "parent", o->name, i,
                (unsigned long long)o->mem[i], (unsigned long long)expected(o, i));
      bad++;
    }
  return bad;
}

int main(int argc, char** argv) {
  if (argc < 4) return 100;
  snprintf(resident_file, sizeof(resident_file), "%s/lazyshm.resident", argv[2]);
  size_t mib = strtoull(argv[3], NULL, 0);
  int keep_fd = argc > 4 && strcmp(argv[4], "fd") == 0;
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
  pthread_t w;
  pthread_create(&w, NULL, watcher, NULL);
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
