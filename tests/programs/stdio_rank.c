/* A rank whose runtime talks to it over its stdio pipes (the other ends are
 * the runtime's, outside the dumped tree). It keeps state of its own, 4 MiB
 * of computed data and a count of the questions answered:
 *   "ask K\n"  -> "K COUNT ok\n" on stdout (or "K COUNT bad\n" if its data
 *                 changed), and "asked K" on stderr
 *   "hold\n"   -> "held\n", then reads nothing more until SIGUSR1: what the
 *                 runtime writes meanwhile stays queued in the pipe
 *   "quit\n"   -> checks everything, exits 0 only if it held
 *   stdio_rank READY_FILE DIR */
#include "prog_common.h"

#define WORDS (4u << 20) / 8

static uint64_t* data;

static int data_ok(void) {
  for (uint64_t i = 0; i < WORDS; i++)
    if (data[i] != prog_hash(i)) return 0;
  return 1;
}

/* One line, byte by byte: what follows it stays in the pipe. */
static int read_line(char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t r = read(0, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return (int)n;
}

static int say(int fd, const char* text) {
  size_t len = strlen(text);
  return write(fd, text, len) == (ssize_t)len ? 0 : -1;
}

int main(int argc, char** argv) {
  if (argc < 2) return 100;
  prog_install_usr1();
  data = malloc(WORDS * 8);
  for (uint64_t i = 0; i < WORDS; i++) data[i] = prog_hash(i);
  unsigned count = 0;
  prog_ready(argv[1]);
  char line[128];
  while (read_line(line, sizeof line) > 0) {
    unsigned k;
    if (strcmp(line, "quit\n") == 0) {
      CHECK(data_ok(), "data changed");
      return prog_finish();
    }
    if (strcmp(line, "hold\n") == 0) {
      if (say(1, "held\n")) return 3;
      prog_wait_usr1();
      prog_usr1 = 0;
      continue;
    }
    if (sscanf(line, "ask %u", &k) != 1) {
      fprintf(stderr, "bad request %s", line);
      return 2;
    }
    char reply[128];
    snprintf(reply, sizeof reply, "%u %u %s\n", k, count++, data_ok() ? "ok" : "bad");
    if (say(1, reply)) return 3;
    snprintf(reply, sizeof reply, "asked %u\n", k);
    if (say(2, reply)) return 3;
  }
  return 4;
}
