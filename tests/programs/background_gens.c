/* Memory rewritten in a fixed order while it is checkpointed in the
 * background, and checked to be of ONE moment after restore.
 *
 * NPAGES pages of anonymous memory; step W (W = 0, 1, 2, ...) rewrites page
 * order(W mod NPAGES), a fixed permutation that jumps all over the region,
 * with generation W / NPAGES + 1 (a page: its index, its generation, and a
 * pattern made of both). So the step counter alone says what every page
 * holds: after W steps, a page whose position k in the order is below
 * W mod NPAGES holds W / NPAGES + 1, the others W / NPAGES. The counter lives
 * in the same memory: a checkpoint of one moment restores pages that agree
 * with the counter it restores, exactly; a page copied a moment later (a
 * write that got in before it was saved) disagrees.
 *
 * Before each step rewrites its page, it checks that the page holds the
 * generation before (so after a restore every page is checked within one
 * pass); on SIGUSR1 it stops and checks all of them against the counter.
 * A second thread ticks every millisecond and keeps its longest gap: the
 * time the process was stopped, as it saw it (SIGUSR2 starts it over).
 * With NPROC > 1 it forks NPROC - 1 children that do the same in memory of
 * their own (a tree dumped in parallel); SIGUSR1 is passed on to them and
 * their results count.
 * With MODE "churn" it does something else: over and over, from the top of
 * the region down, 1 MiB at a time, it discards the memory (MADV_DONTNEED)
 * and writes it again, checking what it wrote: memory that a background
 * copy cannot save as it was at the freeze (the dump must fail).
 * With MODE "holes" it also works a second region of HOLE_PAGES pages, one
 * step a millisecond: step H (H = 0, 1, ...) works page H mod HOLE_PAGES,
 * in its cycle H / HOLE_PAGES + 1: an odd cycle discards the page
 * (MADV_DONTNEED: zeros, then touched again later), an even one writes it
 * with that cycle; so the hole counter alone says what every page of the
 * region holds, as above. SIGUSR2 stops the holes (a dump that arms before
 * its freeze sees writes, first touches and discards while it arms; the
 * test stops them before the copy, which refuses memory discarded before
 * it is copied).
 * With MODE "flags", SIGUSR2 also makes it madvise(MADV_DONTFORK) its whole
 * region once (a VMA whose flags change, its range the same).
 * usage: background_gens READY_FILE WORK_DIR [NPAGES [STEPS_PER_SEC [NPROC [MODE]]]] */
#include "prog_common.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)

static uint64_t* base;
static size_t npages;
static uint64_t stride;
static volatile uint64_t steps;  /* W */
static uint64_t tag;
static long bad;
static volatile int64_t longest_gap_ns;
static volatile sig_atomic_t reset_gap;

#define HOLE_PAGES 256u
static uint64_t* hbase;
static volatile uint64_t hsteps;  /* H */
static volatile sig_atomic_t holes_on;

static volatile sig_atomic_t flags_mode, flags_asked;

static void on_usr2(int sig) {
  (void)sig;
  reset_gap = 1;
  holes_on = 0;
  if (flags_mode) flags_asked = 1;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t order(uint64_t k) { return (size_t)((k * stride) % npages); }

static uint64_t word(size_t i, uint64_t gen, size_t w) { return prog_hash((tag + i) * 1000003u + gen) ^ w; }

static void write_page(size_t i, uint64_t gen) {
  uint64_t* p = base + i * WORDS;
  p[0] = tag + i;
  p[1] = gen;
  for (size_t w = 2; w < WORDS; w++) p[w] = word(i, gen, w);
}

/* 1 if page i holds generation gen, else reports it (first few) and 0. */
static int page_holds(size_t i, uint64_t gen, const char* when) {
  uint64_t* p = base + i * WORDS;
  int ok = p[0] == tag + i && p[1] == gen;
  for (size_t w = 2; w < WORDS && ok; w++) ok = p[w] == word(i, gen, w);
  if (!ok && bad++ < 10)
    fprintf(stderr, "pid %d: %s: page %zu (step %llu): expected generation %llu, holds index %lld generation %llu\n",
            (int)getpid(), when, i, (unsigned long long)steps, (unsigned long long)gen, (long long)(p[0] - tag),
            (unsigned long long)p[1]);
  return ok;
}

static uint64_t hword(size_t j, uint64_t cycle, size_t w) { return prog_hash((tag + j) * 7919u + cycle * 31u) ^ (w + 1); }

/* What hole page j holds after h steps: 0 zeros, else the cycle written. */
static uint64_t hole_state(size_t j, uint64_t h) {
  if (h <= j) return 2;  /* written in cycle 2 at setup */
  uint64_t last = j + (h - 1 - j) / HOLE_PAGES * HOLE_PAGES;
  uint64_t cycle = last / HOLE_PAGES + 1;
  return cycle % 2 ? 0 : cycle;
}

static void hole_step(void) {
  uint64_t h = hsteps;
  size_t j = (size_t)(h % HOLE_PAGES);
  uint64_t cycle = h / HOLE_PAGES + 1;
  uint64_t* p = hbase + j * WORDS;
  if (cycle % 2) madvise(p, PAGE, MADV_DONTNEED);
  else
    for (size_t w = 0; w < WORDS; w++) p[w] = hword(j, cycle, w);
  hsteps = h + 1;
}

static int hole_holds(size_t j, uint64_t state) {
  uint64_t* p = hbase + j * WORDS;
  for (size_t w = 0; w < WORDS; w++)
    if (p[w] != (state ? hword(j, state, w) : 0)) return 0;
  return 1;
}

static void check_holes(void) {
  if (!hbase) return;
  uint64_t h = hsteps;
  for (size_t j = 0; j < HOLE_PAGES; j++) {
    /* The step under way when the process was stopped may be done or not. */
    int ok = hole_holds(j, hole_state(j, h)) || (j == h % HOLE_PAGES && hole_holds(j, hole_state(j, h + 1)));
    if (!ok && bad++ < 10)
      fprintf(stderr, "pid %d: hole page %zu (hole step %llu): expected state %llu\n", (int)getpid(), j,
              (unsigned long long)h, (unsigned long long)hole_state(j, h));
  }
  fprintf(stderr, "background_gens %d: %llu hole steps\n", (int)getpid(), (unsigned long long)h);
}

static void setup_holes(void) {
  hbase = mmap(NULL, HOLE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (hbase == MAP_FAILED) { perror("mmap"); exit(2); }
  for (size_t j = 0; j < HOLE_PAGES; j++)
    for (size_t w = 0; w < WORDS; w++) hbase[j * WORDS + w] = hword(j, 2, w);
  holes_on = 1;
}

static void* ticker(void* arg) {
  (void)arg;
  uint64_t last = now_ns();
  for (;;) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    uint64_t t = now_ns();
    if (reset_gap) {
      reset_gap = 0;
      longest_gap_ns = 0;
    } else if ((int64_t)(t - last) > longest_gap_ns) {
      longest_gap_ns = (int64_t)(t - last);
    }
    last = t;
  }
  return NULL;
}

static void setup(void) {
  char* m = mmap(NULL, (npages + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m + PAGE, npages * PAGE, PROT_READ | PROT_WRITE) != 0) { perror("mmap"); exit(2); }
  base = (uint64_t*)(m + PAGE);
  tag = (uint64_t)getpid() << 32;
  for (size_t i = 0; i < npages; i++) write_page(i, 1);
  steps = npages;  /* one pass done: every page at generation 1 */
  pthread_t t;
  pthread_create(&t, NULL, ticker, NULL);
}

static void work(unsigned rate) {
  /* A millisecond's share of steps, at least one. */
  unsigned per_ms = rate / 1000 ? rate / 1000 : 1;
  while (!prog_usr1) {
    for (unsigned k = 0; k < per_ms && !prog_usr1; k++) {
      uint64_t w = steps;
      size_t i = order(w % npages);
      uint64_t gen = w / npages + 1;
      page_holds(i, gen - 1, "before its rewrite");
      write_page(i, gen);
      steps = w + 1;
    }
    if (holes_on) hole_step();
    if (flags_asked) {
      flags_asked = 0;
      if (madvise(base, npages * PAGE, MADV_DONTFORK) != 0) perror("madvise");
      fprintf(stderr, "background_gens %d: its region is MADV_DONTFORK now\n", (int)getpid());
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static void churn(void) {
  const size_t block = 256;  /* pages: 1 MiB */
  uint64_t pass = 1;
  while (!prog_usr1) {
    pass++;
    for (size_t top = npages; top > 0 && !prog_usr1;) {
      size_t first = top > block ? top - block : 0;
      madvise(base + first * WORDS, (top - first) * PAGE, MADV_DONTNEED);
      for (size_t i = first; i < top; i++) write_page(i, pass);
      for (size_t i = first; i < top; i++) page_holds(i, pass, "churned");
      top = first;
    }
  }
  fprintf(stderr, "background_gens %d: churned %llu passes, %ld wrong\n", (int)getpid(), (unsigned long long)pass, bad);
}

static int check_all(void) {
  uint64_t w = steps;
  long before = bad;
  for (uint64_t k = 0; k < npages; k++) page_holds(order(k), w / npages + (k < w % npages ? 1 : 0), "at the end");
  check_holes();
  fprintf(stderr, "background_gens %d: %zu pages, %llu steps (%llu passes), %ld wrong, longest gap %.3f ms\n",
          (int)getpid(), npages, (unsigned long long)w, (unsigned long long)(w / npages), bad,
          (double)longest_gap_ns / 1e6);
  (void)before;
  return bad ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: background_gens READY_FILE WORK_DIR [NPAGES [STEPS_PER_SEC [NPROC]]]\n");
    return 2;
  }
  npages = argc > 3 ? strtoul(argv[3], NULL, 0) : 8192;
  unsigned rate = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 0) : 40000;
  unsigned nproc = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 0) : 1;
  int churning = argc > 6 && strcmp(argv[6], "churn") == 0;
  int holes = argc > 6 && strcmp(argv[6], "holes") == 0;
  flags_mode = argc > 6 && strcmp(argv[6], "flags") == 0;
  /* A prime, coprime with any npages below it: the order is a permutation. */
  stride = 1000003;
  if (npages == 0 || npages % stride == 0) return 2;
  prog_install_usr1();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr2;
  sigaction(SIGUSR2, &sa, NULL);

  pid_t children[64];
  unsigned nchildren = 0;
  int ready[2];
  if (pipe(ready) != 0) { perror("pipe"); return 2; }
  for (unsigned c = 1; c < nproc && c < 64; c++) {
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
      close(ready[0]);
      setup();
      if (write(ready[1], "r", 1) != 1) return 2;
      close(ready[1]);
      work(rate);
      return check_all();
    }
    children[nchildren++] = pid;
  }
  close(ready[1]);
  char buf[64];
  if (prog_read_exact(ready[0], buf, nchildren) != nchildren) { fprintf(stderr, "a child failed to start\n"); return 2; }
  close(ready[0]);
  setup();
  if (holes) setup_holes();
  prog_ready(argv[1]);
  if (churning) {
    churn();
    return bad ? 1 : 0;
  }
  work(rate);
  for (unsigned c = 0; c < nchildren; c++) kill(children[c], SIGUSR1);
  int failed = check_all();
  for (unsigned c = 0; c < nchildren; c++) {
    int status = 0;
    if (waitpid(children[c], &status, 0) != children[c] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "background_gens: child %d ended with status %#x\n", (int)children[c], status);
      failed = 1;
    }
  }
  return failed;
}
