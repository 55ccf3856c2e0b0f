/* Unix socket pairs with data in flight: a parent and its child talk over a
 * stream pair and a seqpacket pair, each with bytes queued in both directions
 * at the dump; the parent also holds a dgram pair with three datagrams queued.
 * After SIGUSR1 everything must arrive in order, once, with its message
 * boundaries, and every pair must still work both ways. */
#include "prog_common.h"

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define DOWN_BYTES 20000 /* parent -> child, stream */
#define UP_BYTES 3000    /* child -> parent, stream */

static unsigned char byte_at(size_t i, unsigned salt) { return (unsigned char)(prog_hash(i + salt) & 0xff); }

static const char* down_msgs[] = {"seq-down-0", "seq-down-one", "seq-down-the-second-and-last"};
static const char* up_msgs[] = {"seq-up-A", "seq-up-BBBBBBBBBBBB"};
static const char* dgrams[] = {"d1", "datagram number two", "the third datagram, a longer one"};

static int send_stream(int fd, size_t n, unsigned salt) {
  unsigned char* buf = malloc(n);
  for (size_t i = 0; i < n; i++) buf[i] = byte_at(i, salt);
  int ok = send(fd, buf, n, 0) == (ssize_t)n;
  free(buf);
  return ok;
}

/* The queued bytes, read without waiting: they must all be there already. */
static void check_stream(int fd, size_t n, unsigned salt, const char* name) {
  unsigned char buf[4096];
  size_t got = 0, bad = 0;
  while (got < n) {
    ssize_t r = recv(fd, buf, sizeof(buf) < n - got ? sizeof(buf) : n - got, MSG_DONTWAIT);
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++) bad += buf[i] != byte_at(got + (size_t)i, salt);
    got += (size_t)r;
  }
  CHECK(got == n && bad == 0, "%s: %zu of %zu bytes, %zu differ", name, got, n, bad);
  CHECK(recv(fd, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "%s: more bytes than were queued", name);
}

static void check_msgs(int fd, const char** msgs, int n, const char* name) {
  char buf[256];
  for (int i = 0; i < n; i++) {
    ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    CHECK(r == (ssize_t)strlen(msgs[i]) && memcmp(buf, msgs[i], (size_t)r) == 0,
          "%s: message %d: got %zd bytes", name, i, r);
  }
  CHECK(recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN, "%s: more messages than were queued", name);
}

/* A word sent one way arrives whole on the other side (blocking). */
static void expect_word(int fd, const char* word, const char* name) {
  char buf[64] = {0};
  size_t got = 0, n = strlen(word);
  while (got < n) {
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
  }
  CHECK(got == n && memcmp(buf, word, n) == 0, "%s: got '%.*s'", name, (int)got, buf);
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  int st[2], sp[2], dg[2], ready[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) ||
      pipe(ready))
    return 2;
  pid_t child = fork();
  if (child == 0) {
    close(st[0]);
    close(sp[0]);
    close(ready[0]);
    if (!send_stream(st[1], UP_BYTES, 2)) return 2;
    for (int i = 0; i < 2; i++)
      if (send(sp[1], up_msgs[i], strlen(up_msgs[i]), 0) < 0) return 2;
    if (write(ready[1], "R", 1) != 1) return 2;
    close(ready[1]);
    prog_wait_usr1();
    check_stream(st[1], DOWN_BYTES, 1, "child stream");
    check_msgs(sp[1], down_msgs, 3, "child seqpacket");
    CHECK(send(st[1], "after-c", 7, 0) == 7, "child stream send");
    CHECK(send(sp[1], "after-c", 7, 0) == 7, "child seqpacket send");
    expect_word(st[1], "after-p", "child stream after");
    expect_word(sp[1], "after-p", "child seqpacket after");
    return prog_finish();
  }
  close(st[1]);
  close(sp[1]);
  close(ready[1]);
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg)) return 2;
  if (!send_stream(st[0], DOWN_BYTES, 1)) return 2;
  for (int i = 0; i < 3; i++)
    if (send(sp[0], down_msgs[i], strlen(down_msgs[i]), 0) < 0) return 2;
  for (int i = 0; i < 3; i++)
    if (send(dg[0], dgrams[i], strlen(dgrams[i]), 0) < 0) return 2;
  char r;
  if (read(ready[0], &r, 1) != 1 || r != 'R') return 2;
  close(ready[0]);
  prog_ready(argv[1]);
  prog_wait_usr1();
  /* Our queues first, before the child may add to them. */
  check_stream(st[0], UP_BYTES, 2, "parent stream");
  check_msgs(sp[0], up_msgs, 2, "parent seqpacket");
  check_msgs(dg[1], dgrams, 3, "dgram");
  CHECK(send(dg[1], "back", 4, 0) == 4 && send(dg[0], "forth", 5, 0) == 5, "dgram sends");
  expect_word(dg[0], "back", "dgram back");
  expect_word(dg[1], "forth", "dgram forth");
  kill(child, SIGUSR1);
  expect_word(st[0], "after-c", "parent stream after");
  expect_word(sp[0], "after-c", "parent seqpacket after");
  CHECK(send(st[0], "after-p", 7, 0) == 7, "parent stream send");
  CHECK(send(sp[0], "after-p", 7, 0) == 7, "parent seqpacket send");
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
