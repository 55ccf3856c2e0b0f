/* A pty with bytes not yet read in both directions at the dump. The parent
 * holds the master, its child the slave as fd 0. Before READY the child
 * writes a line to the slave (waiting at the master) and the parent writes
 * input to the master (waiting in the slave's input queue), and waits until
 * the slave's line discipline has processed it.
 * "canon": the slave keeps the cooked termios of a new pty (ICANON, ECHO,
 *   ICRNL, OPOST|ONLCR). The parent writes "line one\rpartial": the slave
 *   holds "line one\n" (one whole line) and "partial" (a line still being
 *   typed), and the echo "line one\r\npartial" waits at the master after the
 *   child's "child-out\r\n". After SIGUSR1: the master reads exactly those
 *   bytes (processed once: no "\r\r\n"), the child's first read returns the
 *   one line "line one\n" (the line ends are where they were), and once the
 *   parent typed "-rest\r" the second read "partial-rest\n".
 * "raw": the slave in raw mode (cfmakeraw); the child's "out\n" and the
 *   parent's "raw\rin\x03put" (no ICRNL, no SIGINT, no echo) come back as they
 *   were, and nothing else.
 * "outside": as "canon", and a pipe's F_SETOWN names the process that started
 *   us (outside the tree): a dump is refused after the pty's bytes were read
 *   out, and must put them back.
 * "noslave": the parent alone, the slave written to and closed: the master's
 *   bytes cannot be put back without a slave in the tree (a dump is refused). */
#include "prog_common.h"

#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static const char child_out_canon[] = "child-out\n";
static const char child_out_raw[] = "out\n";
static const char input_canon[] = "line one\rpartial";
static const char input_raw[] = "raw\rin\x03put";

static int queued_at(int fd) {
  int n = -1;
  if (ioctl(fd, FIONREAD, &n) != 0) return -1;
  return n;
}

/* Exactly want, then nothing more for a moment. */
static void expect_exactly(int fd, const char* want, size_t n, const char* name) {
  char buf[256] = {0};
  size_t got = prog_read_exact(fd, buf, n);
  CHECK(got == n && memcmp(buf, want, n) == 0, "%s: got %zu bytes '%.*s', want '%.*s'", name, got, (int)got,
        buf, (int)n, want);
  usleep(50 * 1000);
  CHECK(queued_at(fd) == 0, "%s: %d more byte(s) queued", name, queued_at(fd));
}

static int child_main(const char* name, int raw, int ready_fd) {
  int s = open(name, O_RDWR | O_NOCTTY);
  if (s < 0 || dup2(s, 0) != 0) return 2;
  close(s);
  if (raw) {
    struct termios t;
    if (tcgetattr(0, &t) != 0) return 2;
    cfmakeraw(&t);
    if (tcsetattr(0, TCSANOW, &t) != 0) return 2;
  }
  const char* out = raw ? child_out_raw : child_out_canon;
  if (write(0, out, strlen(out)) != (ssize_t)strlen(out)) return 2;
  if (write(ready_fd, "R", 1) != 1) return 2;
  close(ready_fd);
  prog_wait_usr1();

  struct termios now;
  CHECK(tcgetattr(0, &now) == 0, "tcgetattr: %s", strerror(errno));
  if (raw) {
    CHECK(!(now.c_lflag & (ICANON | ECHO | ISIG)) && !(now.c_oflag & OPOST) && !(now.c_iflag & ICRNL),
          "not raw any more: lflag %#x oflag %#x iflag %#x", now.c_lflag, now.c_oflag, now.c_iflag);
    expect_exactly(0, input_raw, strlen(input_raw), "child reads the slave's queued input");
    return prog_finish();
  }
  CHECK((now.c_lflag & (ICANON | ECHO | ISIG | IEXTEN)) == (ICANON | ECHO | ISIG | IEXTEN) &&
            (now.c_oflag & (OPOST | ONLCR)) == (OPOST | ONLCR) && (now.c_iflag & ICRNL),
        "not cooked any more: lflag %#x oflag %#x iflag %#x", now.c_lflag, now.c_oflag, now.c_iflag);
  CHECK(now.c_cc[VERASE] == 0177 && now.c_cc[VINTR] == 003 && now.c_cc[VEOF] == 004,
        "c_cc: VERASE %#x VINTR %#x VEOF %#x", now.c_cc[VERASE], now.c_cc[VINTR], now.c_cc[VEOF]);
  CHECK(queued_at(0) == 9, "a whole line of 9 bytes queued, FIONREAD says %d", queued_at(0));
  char line[128] = {0};
  ssize_t n = read(0, line, sizeof line);
  CHECK(n == 9 && memcmp(line, "line one\n", 9) == 0, "first line: %zd bytes '%.*s'", n, (int)(n > 0 ? n : 0),
        line);
  memset(line, 0, sizeof line);
  n = read(0, line, sizeof line);
  CHECK(n == 13 && memcmp(line, "partial-rest\n", 13) == 0, "second line: %zd bytes '%.*s'", n,
        (int)(n > 0 ? n : 0), line);
  return prog_finish();
}

static int noslave_main(int m) {
  /* The slave written to and closed: its bytes wait at the master. */
  int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY);
  if (s < 0) return 2;
  struct termios t;
  if (tcgetattr(s, &t) != 0) return 2;
  cfmakeraw(&t);
  if (tcsetattr(s, TCSANOW, &t) != 0 || write(s, "x", 1) != 1) return 2;
  close(s);
  for (int i = 0; i < 200 && queued_at(m) != 1; i++) usleep(5000);
  if (queued_at(m) != 1) return 2;
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  const char* mode = argv[3];
  int raw = strcmp(mode, "raw") == 0, noslave = strcmp(mode, "noslave") == 0;
  prog_install_usr1();
  int m = posix_openpt(O_RDWR | O_NOCTTY);
  if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) return 2;
  char name[64];
  if (ptsname_r(m, name, sizeof name) != 0) return 2;
  if (noslave) {
    if (noslave_main(m) != 0) return 2;
    prog_ready(argv[1]);
    prog_wait_usr1();
    char c = 0;
    CHECK(read(m, &c, 1) == 1 && c == 'x', "the master's queued byte: %#x", c);
    return prog_finish();
  }
  int outside[2] = {-1, -1};
  if (strcmp(mode, "outside") == 0 && (pipe(outside) != 0 || fcntl(outside[0], F_SETOWN, getppid()) != 0))
    return 2;
  int ready[2];
  if (pipe(ready) != 0) return 2;
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    close(m);
    close(ready[0]);
    return child_main(name, raw, ready[1]);
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1 || r != 'R') return 2;
  close(ready[0]);
  const char* input = raw ? input_raw : input_canon;
  if (write(m, input, strlen(input)) != (ssize_t)strlen(input)) return 2;
  /* What the master reads once the slave's line discipline has taken the
   * input: the child's line (ONLCR) and, cooked, the echo. */
  const char* want = raw ? "out\n" : "child-out\r\nline one\r\npartial";
  for (int i = 0; i < 400 && queued_at(m) != (int)strlen(want); i++) usleep(5000);
  if (queued_at(m) != (int)strlen(want)) return 2;
  prog_ready(argv[1]);
  prog_wait_usr1();

  kill(child, SIGUSR1);
  expect_exactly(m, want, strlen(want), "parent reads the master");
  if (!raw) {
    CHECK(write(m, "-rest\r", 6) == 6, "write to the master: %s", strerror(errno));
    expect_exactly(m, "-rest\r\n", 7, "parent reads the echo of the rest");
  }
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
