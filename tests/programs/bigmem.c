/* A process with SIZE MiB (argv[3], default 256) of anonymous memory whose
 * every word is derived from its address, and a smaller heap pattern. After
 * SIGUSR1 it checks every word. For page servers and page-path benchmarks. */
#include "prog_common.h"

#include <sys/mman.h>

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: bigmem READY_FILE WORK_DIR [MIB]\n"); return 2; }
  prog_install_usr1();
  size_t mib = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 256;
  size_t size = mib << 20;
  uint64_t* big = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (big == MAP_FAILED) { perror("mmap"); return 2; }
  for (size_t i = 0; i < size / 8; i++) big[i] = prog_hash((uint64_t)(uintptr_t)&big[i]);
  /* A hole of untouched pages in the middle: they must read back as zeros. */
  size_t hole = size / 2 / 4096 * 4096;
  madvise((char*)big + hole, 64 * 4096, MADV_DONTNEED);
  uint64_t* heap = malloc(50000 * sizeof(uint64_t));
  for (size_t i = 0; i < 50000; i++) heap[i] = prog_hash(i + 777);
  prog_ready(argv[1]);
  while (!prog_usr1) {
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  size_t bad = 0, bad_hole = 0;
  for (size_t i = 0; i < size / 8; i++) {
    size_t off = i * 8;
    if (off >= hole && off < hole + 64 * 4096) bad_hole += big[i] != 0;
    else bad += big[i] != prog_hash((uint64_t)(uintptr_t)&big[i]);
  }
  CHECK(bad == 0, "%zu words of the %zu MiB mapping differ", bad, mib);
  CHECK(bad_hole == 0, "%zu words of the dropped pages are not zero", bad_hole);
  bad = 0;
  for (size_t i = 0; i < 50000; i++) bad += heap[i] != prog_hash(i + 777);
  CHECK(bad == 0, "%zu words of the heap differ", bad);
  return prog_failures ? 1 : 0;
}
