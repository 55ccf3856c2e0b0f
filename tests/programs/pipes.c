/* Pipes with data in flight: a parent writes a numbered byte stream into a
 * pipe its child reads after SIGUSR1 (half full at the dump); a second pipe
 * is filled to capacity (its write end non-blocking); the child writes back
 * into a third pipe read by the parent. Nothing may be lost, duplicated or
 * reordered by a dump. */
#include "prog_common.h"

#include <sys/wait.h>

#define HALF 30000

static unsigned char byte_at(size_t i, unsigned salt) { return (unsigned char)(prog_hash(i + salt) & 0xff); }

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  int down[2], full[2], up[2];
  if (pipe(down) || pipe(full) || pipe(up)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(down[1]);
    close(up[0]);
    close(full[0]);
    close(full[1]);
    unsigned char c = 0;
    /* The child announces it is set up through the up pipe. */
    if (write(up[1], "R", 1) != 1) return 2;
    prog_wait_usr1();
    size_t bad = 0, got = 0;
    unsigned char buf[4096];
    for (;;) {
      ssize_t n = read(down[0], buf, sizeof(buf));
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; i++) bad += buf[i] != byte_at(got + (size_t)i, 1);
      got += (size_t)n;
    }
    CHECK(got == HALF + 100, "child read %zu bytes", got);
    CHECK(bad == 0, "%zu bytes differ", bad);
    for (size_t i = 0; i < 5000; i++) {
      c = byte_at(i, 2);
      if (write(up[1], &c, 1) != 1) return 3;
    }
    return prog_finish();
  }
  close(down[0]);
  close(up[1]);
  unsigned char* data = malloc(HALF + 100);
  for (size_t i = 0; i < HALF + 100; i++) data[i] = byte_at(i, 1);
  if (write(down[1], data, HALF) != HALF) return 2;
  fcntl(full[1], F_SETFL, O_NONBLOCK);
  size_t filled = 0;
  for (;;) {
    unsigned char c = byte_at(filled, 3);
    if (write(full[1], &c, 1) != 1) break;
    filled++;
  }
  char r;
  if (read(up[0], &r, 1) != 1 || r != 'R') return 2;
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  /* The rest of the stream goes after what was in flight. */
  CHECK(write(down[1], data + HALF, 100) == 100, "write after restore");
  close(down[1]);
  unsigned char c;
  CHECK(write(full[1], &c, 1) < 0 && errno == EAGAIN, "the full pipe is no longer full");
  size_t bad = 0;
  for (size_t i = 0; i < filled; i++) {
    CHECK(read(full[0], &c, 1) == 1, "read full pipe");
    bad += c != byte_at(i, 3);
  }
  CHECK(bad == 0 && filled == 65536, "full pipe: %zu of %zu bytes differ", bad, filled);
  size_t got = 0;
  bad = 0;
  while (read(up[0], &c, 1) == 1) bad += c != byte_at(got++, 2);
  CHECK(got == 5000 && bad == 0, "up pipe: %zu bytes, %zu differ", got, bad);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
