/* The demo workload: counts, keeps a checksum of 64 MiB it filled, and logs a
 * line every 200 ms to the file given as argv[1]. A checkpointed and restored
 * counter goes on from where it was. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: counter LOG_FILE\n"); return 2; }
  FILE* log = fopen(argv[1], "a");
  if (!log) { perror("log"); return 2; }
  size_t n = (64u << 20) / sizeof(uint64_t);
  uint64_t* data = malloc(n * sizeof(uint64_t));
  uint64_t expected = 0;
  for (size_t i = 0; i < n; i++) data[i] = i * 2654435761u;
  for (size_t i = 0; i < n; i += 4096) expected += data[i];
  for (unsigned long count = 0;; count++) {
    uint64_t check = 0;
    for (size_t i = 0; i < n; i += 4096) check += data[i];
    fprintf(log, "pid %d: count %lu, memory %s\n", (int)getpid(), count,
            check == expected ? "intact" : "CORRUPT");
    fflush(log);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}
