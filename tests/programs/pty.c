/* A pseudo-terminal held at both ends, as mpirun holds its ranks' terminals:
 * the parent holds the master; its child leads a session whose controlling
 * terminal is the slave, holds the slave as stdout, in raw mode with a changed
 * VINTR, VMIN 1 and a window size of its own, and made the process group of
 * its own child (the grandchild) the terminal's foreground. After SIGUSR1 the
 * child checks its termios, window size, tty name, controlling terminal and
 * foreground group, and writes through the slave and through /dev/tty; the
 * grandchild, in the foreground, reads what the parent writes to the master;
 * the parent checks the pty index and gets the child's bytes.
 * "queued": the child writes a line the parent reads only after SIGUSR1 (a
 * dump must refuse it and leave both intact). */
#include "prog_common.h"

#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

#define ROWS 37
#define COLS 101
#define VINTR_CHAR 0x07

static const char pending[] = "pending line\n";

static void expect_bytes(int fd, const char* want, const char* name) {
  char buf[128] = {0};
  size_t n = strlen(want);
  int got = (int)prog_read_exact(fd, buf, n);
  CHECK(got == (int)n && memcmp(buf, want, n) == 0, "%s: got %d bytes '%.*s'", name, got, got, buf);
}

static int child_main(const char* name, int ready_fd, int queued) {
  if (setsid() < 0) return 2;
  int s = open(name, O_RDWR | O_NOCTTY);
  if (s < 0 || ioctl(s, TIOCSCTTY, 0) != 0) return 2;
  if (dup2(s, 1) != 1) return 2;
  close(s);
  struct termios t;
  if (tcgetattr(1, &t) != 0) return 2;
  cfmakeraw(&t);
  t.c_cc[VINTR] = VINTR_CHAR;
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  if (tcsetattr(1, TCSANOW, &t) != 0) return 2;
  struct winsize ws = {ROWS, COLS, 0, 0};
  if (ioctl(1, TIOCSWINSZ, &ws) != 0) return 2;
  pid_t gc = fork();
  if (gc < 0) return 2;
  if (gc == 0) {
    setpgid(0, 0);
    prog_wait_usr1();
    CHECK(tcgetpgrp(1) == getpgrp(), "grandchild: foreground group %d, ours %d", (int)tcgetpgrp(1),
          (int)getpgrp());
    /* In the foreground: reading does not stop us (SIGTTIN). */
    expect_bytes(1, "from-parent", "grandchild reads the slave");
    return prog_finish();
  }
  if (setpgid(gc, gc) != 0 || tcsetpgrp(1, gc) != 0) return 2;
  if (queued && write(1, pending, strlen(pending)) != (ssize_t)strlen(pending)) return 2;
  if (write(ready_fd, "R", 1) != 1) return 2;
  close(ready_fd);
  prog_wait_usr1();

  struct termios now;
  CHECK(tcgetattr(1, &now) == 0, "tcgetattr: %s", strerror(errno));
  CHECK(!(now.c_lflag & (ICANON | ECHO | ISIG)) && !(now.c_oflag & OPOST) && !(now.c_iflag & ICRNL),
        "not raw any more: lflag %#x oflag %#x iflag %#x", now.c_lflag, now.c_oflag, now.c_iflag);
  CHECK(now.c_cc[VINTR] == VINTR_CHAR && now.c_cc[VMIN] == 1 && now.c_cc[VTIME] == 0,
        "c_cc: VINTR %#x VMIN %d VTIME %d", now.c_cc[VINTR], now.c_cc[VMIN], now.c_cc[VTIME]);
  struct winsize wnow = {0, 0, 0, 0};
  CHECK(ioctl(1, TIOCGWINSZ, &wnow) == 0 && wnow.ws_row == ROWS && wnow.ws_col == COLS,
        "window size %ux%u", wnow.ws_row, wnow.ws_col);
  const char* tn = ttyname(1);
  CHECK(tn && strcmp(tn, name) == 0, "ttyname %s, was %s", tn ? tn : "(none)", name);
  CHECK(tcgetsid(1) == getpid(), "tcgetsid %d, not our session %d", (int)tcgetsid(1), (int)getpid());
  pid_t sid = 0;
  CHECK(ioctl(1, TIOCGSID, &sid) == 0 && sid == getpid(), "TIOCGSID %d", (int)sid);
  CHECK(tcgetpgrp(1) == gc, "foreground group %d, the grandchild's %d", (int)tcgetpgrp(1), (int)gc);
  /* /dev/tty reaches the controlling terminal: what is written there comes
   * out of the parent's master after what fd 1 wrote. */
  CHECK(write(1, "from-child\n", 11) == 11, "write to the slave: %s", strerror(errno));
  int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
  CHECK(tty >= 0, "no controlling terminal: /dev/tty: %s", strerror(errno));
  if (tty >= 0) {
    CHECK(write(tty, "via-dev-tty\n", 12) == 12, "write to /dev/tty: %s", strerror(errno));
    close(tty);
  }
  kill(gc, SIGUSR1);
  int status = 0;
  CHECK(waitpid(gc, &status, 0) == gc && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "grandchild failed: %#x", status);
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  int queued = argc > 3 && strcmp(argv[3], "queued") == 0;
  prog_install_usr1();
  int m = posix_openpt(O_RDWR | O_NOCTTY);
  if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) return 2;
  char name[64];
  if (ptsname_r(m, name, sizeof name) != 0) return 2;
  unsigned index = 0;
  if (ioctl(m, TIOCGPTN, &index) != 0) return 2;
  int ready[2];
  if (pipe(ready) != 0) return 2;
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    close(m);
    close(ready[0]);
    return child_main(name, ready[1], queued);
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1 || r != 'R') return 2;
  close(ready[0]);
  prog_ready(argv[1]);
  prog_wait_usr1();

  unsigned now = ~0u;
  CHECK(ioctl(m, TIOCGPTN, &now) == 0 && now == index, "pty index %u, was %u", now, index);
  if (queued) expect_bytes(m, pending, "parent reads the line queued before the dump");
  kill(child, SIGUSR1);
  /* Raw: no \r added to the \n. */
  expect_bytes(m, "from-child\nvia-dev-tty\n", "parent reads the master");
  CHECK(write(m, "from-parent", 11) == 11, "write to the master: %s", strerror(errno));
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
