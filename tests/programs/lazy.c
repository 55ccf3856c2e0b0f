/* Lazy restore: MIB MiB of anonymous memory, each word derived from its
 * address, and THREADS threads that touch it.
 *
 *   lazy READY_FILE DIR MIB THREADS [MODE]
 *
 * A watcher thread ticks every millisecond; the first tick after a gap of
 * more than 100 ms (the dump, the restore) writes the CLOCK_REALTIME time
 * to DIR/lazy.stamp: the restored process's first instructions (bench/lazy).
 * On SIGUSR1 every thread verifies its share of the memory, words read as
 * 64-bit values, and the program exits 0 only if every one held.
 *
 * MODE "events": on SIGUSR1, before the verification, the program forks (the
 * child verifies the whole memory and exits 0 if it held), mremaps a region
 * to a new place, madvise(DONTNEED)s one (it must read zero, never the
 * image's pages again) and munmaps one: during the lazy phase, with most of
 * the memory not in yet. It also has 2 MiB of MADV_WIPEONFORK memory of
 * known words: the forked child must read it as zero (never the image's
 * pages), the parent as it was. */
#include "prog_common.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

static uint64_t* mem;
static size_t words;
static uint64_t* wipe; /* MODE events: 2 MiB of MADV_WIPEONFORK memory */
#define WIPE_WORDS ((2u << 20) / 8)
static int nthreads;
static char stamp_file[4096];

static inline uint64_t word_at(const uint64_t* p) { return prog_hash((uint64_t)(uintptr_t)p ^ 0x5bd1e995u); }

struct share {
  pthread_t t;
  size_t from, to;  /* words */
  long bad;
};

static size_t verify(const uint64_t* base, size_t from, size_t to, const uint64_t* as_if) {
  size_t bad = 0;
  for (size_t i = from; i < to; i++)
    if (base[i] != word_at(as_if + i)) {
      if (bad < 3) fprintf(stderr, "word %zu at %p: %#llx\n", i, (void*)(base + i), (unsigned long long)base[i]);
      bad++;
    }
  return bad;
}

static void* toucher(void* arg) {
  struct share* s = arg;
  prog_wait_usr1();
  s->bad = (long)verify(mem, s->from, s->to, mem);
  return NULL;
}

/* The fork, mremap, madvise and munmap of MODE events, each checked. */
static int events(void) {
  size_t page_words = 4096 / 8, mib_words = (1u << 20) / 8;
  CHECK(words >= 16 * mib_words, "events need 16 MiB at least");
  pid_t child = fork();
  if (child == 0) {
    size_t nonzero = 0;
    for (size_t i = 0; i < WIPE_WORDS; i++) nonzero += wipe[i] != 0;
    if (nonzero) fprintf(stderr, "child: %zu word(s) of the MADV_WIPEONFORK memory are not zero\n", nonzero);
    _exit(verify(mem, 0, words, mem) || nonzero ? 1 : 0);
  }
  CHECK(verify(wipe, 0, WIPE_WORDS, wipe) == 0, "the MADV_WIPEONFORK memory lost its words in the parent");
  /* mremap MiB 2..4 away: its words keep the values of their old addresses. */
  uint64_t* old = mem + 2 * mib_words;
  void* to = mmap(NULL, 2u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* moved = mremap(old, 2u << 20, 2u << 20, MREMAP_MAYMOVE | MREMAP_FIXED, to);
  CHECK(moved == to, "mremap: %s", strerror(errno));
  if (moved == to) CHECK(verify(moved, 0, 2 * mib_words, old) == 0, "the mremapped MiB lost their words");
  /* DONTNEED MiB 5..6 (half touched first): zero from now on. */
  uint64_t* dn = mem + 5 * mib_words;
  (void)*(volatile uint64_t*)dn;
  CHECK(madvise(dn, 1u << 20, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
  for (size_t i = 0; i < mib_words; i += page_words) CHECK(dn[i] == 0, "DONTNEED page %zu reads %#llx", i / page_words, (unsigned long long)dn[i]);
  /* munmap MiB 7..8, then map fresh memory there: zero. */
  uint64_t* un = mem + 7 * mib_words;
  CHECK(munmap(un, 1u << 20) == 0, "munmap: %s", strerror(errno));
  void* again = mmap(un, 1u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  CHECK(again == un, "mmap again");
  for (size_t i = 0; i < mib_words; i += page_words) CHECK(un[i] == 0, "remapped page reads %#llx", (unsigned long long)un[i]);
  /* The rest, as it was. */
  CHECK(verify(mem, 0, 2 * mib_words, mem) == 0, "MiB 0..2");
  CHECK(verify(mem, 4 * mib_words, 5 * mib_words, mem) == 0, "MiB 4..5");
  CHECK(verify(mem, 6 * mib_words, 7 * mib_words, mem) == 0, "MiB 6..7");
  CHECK(verify(mem, 8 * mib_words, words, mem) == 0, "MiB 8..");
  int st = 0;
  CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child saw status %#x", st);
  return prog_failures;
}

int main(int argc, char** argv) {
  if (argc < 5) return 100;
  snprintf(stamp_file, sizeof(stamp_file), "%s/lazy.stamp", argv[2]);
  size_t mib = strtoull(argv[3], NULL, 0);
  nthreads = atoi(argv[4]);
  const char* mode = argc > 5 ? argv[5] : "plain";
  words = (mib << 20) / 8;
  if (strcmp(mode, "events") == 0) {
    /* Mapped first, above mem: the prefetch, in address order, reaches it
     * after mem, so it is still missing at the fork. */
    wipe = mmap(NULL, 2u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (wipe == MAP_FAILED || madvise(wipe, 2u << 20, MADV_WIPEONFORK) != 0) return 102;
    for (size_t i = 0; i < WIPE_WORDS; i++) wipe[i] = word_at(wipe + i);
  }
  mem = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 101;
  for (size_t i = 0; i < words; i++) mem[i] = word_at(mem + i);
  prog_install_usr1();
  prog_start_gap_watcher(stamp_file, NULL);
  int events_mode = strcmp(mode, "events") == 0;
  struct share* shares = calloc((size_t)nthreads + 1, sizeof(*shares));
  size_t per = words / (size_t)(nthreads + 1);
  for (int i = 0; i < nthreads; i++) {
    shares[i].from = per * (size_t)i;
    shares[i].to = per * (size_t)(i + 1);
    if (!events_mode) pthread_create(&shares[i].t, NULL, toucher, &shares[i]);
  }
  prog_ready(argv[1]);
  prog_wait_usr1();
  if (events_mode) return events() ? 1 : 0;
  long bad = (long)verify(mem, per * (size_t)nthreads, words, mem);
  for (int i = 0; i < nthreads; i++) {
    pthread_join(shares[i].t, NULL);
    bad += shares[i].bad;
  }
  CHECK(bad == 0, "%ld word(s) differ", bad);
  return prog_failures ? 1 : 0;
}
