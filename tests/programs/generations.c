/* Memory that keeps changing while it is pre-dumped: NPAGES pages, each
 * holding its index, its generation and a pattern made of both; the program
 * keeps a table of every page's generation and rewrites RATE pages a second
 * (a hot set over and over, the rest at random), frees some (MADV_DONTNEED:
 * they must come back as zeros, never as an older copy) and every so often
 * moves a second region to a new address. After SIGUSR1 it stops and checks
 * that every page holds exactly the generation it tracked.
 * usage: generations READY_FILE WORK_DIR [NPAGES [RATE]] */
#include "prog_common.h"

#include <sys/mman.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define HOT 32u
#define MOVED_PAGES 64u

struct region {
  uint64_t* base;
  uint64_t* gen; /* per page; 0: freed, must read as zeros */
  size_t pages;
  uint64_t tag;
};

static void write_page(struct region* r, size_t i, uint64_t gen) {
  uint64_t* p = r->base + i * WORDS;
  r->gen[i] = gen;
  p[0] = r->tag + i;
  p[1] = gen;
  for (size_t w = 2; w < WORDS; w++) p[w] = prog_hash((r->tag + i) * 1000003u + gen * 7919u + w);
}

static void free_page(struct region* r, size_t i) {
  madvise(r->base + i * WORDS, PAGE, MADV_DONTNEED);
  r->gen[i] = 0;
}

static int check_region(struct region* r, const char* name) {
  int bad = 0;
  for (size_t i = 0; i < r->pages; i++) {
    uint64_t* p = r->base + i * WORDS;
    uint64_t gen = r->gen[i];
    int ok = 1;
    if (gen == 0) {
      for (size_t w = 0; w < WORDS && ok; w++) ok = p[w] == 0;
    } else {
      ok = p[0] == r->tag + i && p[1] == gen;
      for (size_t w = 2; w < WORDS && ok; w++) ok = p[w] == prog_hash((r->tag + i) * 1000003u + gen * 7919u + w);
    }
    if (!ok) {
      if (bad < 10)
        fprintf(stderr, "%s page %zu: expected generation %llu, holds index %llu generation %llu\n", name, i,
                (unsigned long long)gen, (unsigned long long)(p[0] - r->tag), (unsigned long long)p[1]);
      bad++;
    }
  }
  return bad;
}

/* Between two inaccessible pages, so that the kernel never merges it with a
 * neighbouring mapping (its range stays its own from round to round). */
static uint64_t* map_pages(size_t pages) {
  char* m = mmap(NULL, (pages + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m + PAGE, pages * PAGE, PROT_READ | PROT_WRITE) != 0) { perror("mmap"); exit(2); }
  return (uint64_t*)(m + PAGE);
}

static void unmap_pages(uint64_t* base, size_t pages) { munmap((char*)base - PAGE, (pages + 2) * PAGE); }

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: generations READY_FILE WORK_DIR [NPAGES [RATE]]\n"); return 2; }
  size_t npages = argc > 3 ? strtoul(argv[3], NULL, 0) : 8192;
  unsigned rate = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 0) : 2000;
  prog_install_usr1();

  struct region main_r = {map_pages(npages), calloc(npages, 8), npages, 1ull << 40};
  struct region moved = {map_pages(MOVED_PAGES), calloc(MOVED_PAGES, 8), MOVED_PAGES, 2ull << 40};
  for (size_t i = 0; i < npages; i++) write_page(&main_r, i, 1);
  for (size_t i = 0; i < MOVED_PAGES; i++) write_page(&moved, i, 1);

  uint64_t seed = 88172645463325252ull, tick = 0, rewrites = 0;
  prog_ready(argv[1]);
  while (!prog_usr1) {
    /* A millisecond's share, at least one page. */
    unsigned n = rate / 1000 ? rate / 1000 : 1;
    for (unsigned k = 0; k < n && !prog_usr1; k++) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      size_t i = (k % 4 == 0) ? (size_t)(seed % HOT) : (size_t)(seed % npages);
      if (seed % 97 == 0) free_page(&main_r, i);
      else write_page(&main_r, i, main_r.gen[i] + 1);
      rewrites++;
    }
    /* Every 200 ms the second region goes elsewhere, its pages one
     * generation on: a VMA that is new since any parent. */
    if (++tick % 200 == 0) {
      uint64_t* old = moved.base;
      moved.base = map_pages(MOVED_PAGES);
      unmap_pages(old, MOVED_PAGES);
      for (size_t i = 0; i < MOVED_PAGES; i++) write_page(&moved, i, moved.gen[i] + 1);
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  int bad = check_region(&main_r, "main") + check_region(&moved, "moved");
  fprintf(stderr, "generations: %zu + %u pages checked after %llu rewrites, %d wrong\n", npages, MOVED_PAGES,
          (unsigned long long)rewrites, bad);
  return bad ? 1 : 0;
}
