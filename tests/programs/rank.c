/* A "rank" of a parallel job: it answers its runtime over a stream socket
 * (the fd number in argv[3]) and keeps state of its own, 4 MiB of computed
 * data and a count of the questions answered.
 *   "ask K\n"  -> "K COUNT ok\n" (or "K COUNT bad\n" if its data changed)
 *   "quit\n"   -> checks everything, exits 0 only if it held
 * The runtime sees its state continue across a checkpoint: COUNT goes on. */
#include "prog_common.h"

#include <sys/socket.h>

#define WORDS (4u << 20) / 8

static uint64_t* data;

static int data_ok(void) {
  for (uint64_t i = 0; i < WORDS; i++)
    if (data[i] != prog_hash(i)) return 0;
  return 1;
}

/* One line, byte by byte: requests are tiny and must not be read past. */
static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t r = read(fd, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return (int)n;
}

int main(int argc, char** argv) {
  if (argc < 4) return 100;
  int fd = atoi(argv[3]);
  data = malloc(WORDS * 8);
  for (uint64_t i = 0; i < WORDS; i++) data[i] = prog_hash(i);
  unsigned count = 0;
  prog_ready(argv[1]);
  char line[128];
  while (read_line(fd, line, sizeof line) > 0) {
    unsigned k;
    if (strcmp(line, "quit\n") == 0) {
      CHECK(data_ok(), "data changed");
      return prog_finish();
    }
    if (sscanf(line, "ask %u", &k) != 1) {
      fprintf(stderr, "bad request %s", line);
      return 2;
    }
    char reply[128];
    int n = snprintf(reply, sizeof reply, "%u %u %s\n", k, count++, data_ok() ? "ok" : "bad");
    if (send(fd, reply, (size_t)n, MSG_NOSIGNAL) != n) return 3;
  }
  fprintf(stderr, "the runtime went away\n");
  return 4;
}
