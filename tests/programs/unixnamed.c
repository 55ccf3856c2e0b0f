/* Named unix sockets: a stream listener bound to a path (mode 0640) and a
 * seqpacket listener on an abstract name; through each, a connection accepted
 * by the parent from a client in the child, with data queued both ways; a
 * client bound to an abstract name of its own; and (mode "full") a connection
 * to each listener that the child made and sent data on, not yet accepted.
 * After SIGUSR1: every name as it was, the queues exactly, the waiting
 * connections accepted with their data, and new clients accepted by both
 * listeners. Mode "external": one listener only, whose pending connection the
 * test driver makes from outside the tree; after SIGUSR1 it is accepted. */
#include "prog_unix.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static char path[200];
static char seq_name[64], client_name[64];
static int seq_len, client_len;

static socklen_t addr_abstract(struct sockaddr_un* a, const char* name, int len) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  memcpy(a->sun_path, name, (size_t)len);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)len);
}

static int listener(int type, const struct sockaddr_un* a, socklen_t len, int backlog) {
  int s = socket(AF_UNIX, type, 0);
  if (s < 0 || bind(s, (const struct sockaddr*)a, len) || listen(s, backlog)) return -1;
  return s;
}

static int client(int type, const struct sockaddr_un* a, socklen_t len) {
  int s = socket(AF_UNIX, type, 0);
  if (s < 0 || connect(s, (const struct sockaddr*)a, len)) return -1;
  return s;
}

/* accept(2) that does not wait: -1 and EAGAIN when nothing is waiting. */
static int accept_now(int l) {
  int fl = fcntl(l, F_GETFL);
  fcntl(l, F_SETFL, fl | O_NONBLOCK);
  int s = accept(l, NULL, NULL);
  int err = errno;
  fcntl(l, F_SETFL, fl);
  errno = err;
  return s;
}

static void expect_msg(int fd, const char* want, const char* what) {
  char buf[256];
  ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  CHECK(r == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)r) == 0, "%s: got %zd bytes '%.*s', want '%s'",
        what, r, r > 0 ? (int)r : 0, buf, want);
}

static void expect_empty(int fd, const char* what) {
  char c;
  CHECK(recv(fd, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "%s: more data than was queued", what);
}

/* A word sent one way arrives whole (blocking). */
static void expect_word(int fd, const char* word, const char* what) {
  char buf[64] = {0};
  size_t got = 0, n = strlen(word);
  while (got < n) {
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
  }
  CHECK(got == n && memcmp(buf, word, n) == 0, "%s: got '%.*s'", what, (int)got, buf);
}

/* The listener still accepts: a new client connects, and a word goes each way. */
static void check_listens(int l, int type, const struct sockaddr_un* a, socklen_t len, const char* what) {
  int c = client(type, a, len);
  CHECK(c >= 0, "%s: a new client cannot connect: %s", what, strerror(errno));
  if (c < 0) return;
  int s = accept(l, NULL, NULL);
  CHECK(s >= 0, "%s: accept of the new client: %s", what, strerror(errno));
  if (s >= 0) {
    CHECK(send(c, "hello", 5, 0) == 5 && send(s, "olleh", 5, 0) == 5, "%s: new client sends", what);
    expect_word(s, "hello", what);
    expect_word(c, "olleh", what);
    close(s);
  }
  close(c);
}

static int run_external(const char* ready) {
  struct sockaddr_un a;
  socklen_t len = addr_path(&a, path);
  int l = listener(SOCK_STREAM, &a, len, 4);
  if (l < 0) return 2;
  prog_ready(ready);
  prog_wait_usr1();
  int s = accept(l, NULL, NULL);
  CHECK(s >= 0, "accept: %s", strerror(errno));
  if (s >= 0) expect_word(s, "external-data", "external client");
  check_listens(l, SOCK_STREAM, &a, len, "listener");
  unlink(path);
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  const char* mode = argc > 3 ? argv[3] : "full";
  int pending = strcmp(mode, "full") == 0;
  snprintf(path, sizeof(path), "%s/listen.sock", argv[2]);
  seq_len = snprintf(seq_name, sizeof(seq_name), "%cminicriu-seq-%d", 0, (int)getpid());
  client_len = snprintf(client_name, sizeof(client_name), "%cminicriu-client-%d", 0, (int)getpid());
  if (strcmp(mode, "external") == 0) return run_external(argv[1]);

  struct sockaddr_un pa, sa, ca;
  socklen_t plen = addr_path(&pa, path), slen = addr_abstract(&sa, seq_name, seq_len),
            clen = addr_abstract(&ca, client_name, client_len);
  int l1 = listener(SOCK_STREAM, &pa, plen, 5);
  int l2 = listener(SOCK_SEQPACKET, &sa, slen, 3);
  if (l1 < 0 || l2 < 0 || chmod(path, 0640)) return 2;
  int ready[2], down[2];
  if (pipe(ready) || pipe(down)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    close(down[1]);
    int c1 = client(SOCK_STREAM, &pa, plen), c2 = client(SOCK_SEQPACKET, &sa, slen);
    if (c1 < 0 || c2 < 0) return 2;
    /* Accepted by the parent before the waiting ones connect. */
    if (write(ready[1], "C", 1) != 1) return 2;
    char r;
    if (read(down[0], &r, 1) != 1 || r != 'A') return 2;
    close(down[0]);
    if (send(c1, "up-stream", 9, 0) != 9 || send(c2, "up-seq-1", 8, 0) != 8 || send(c2, "up-seq-two", 10, 0) != 10)
      return 2;
    int p1 = -1, p2 = -1;
    if (pending) {
      p1 = client(SOCK_STREAM, &pa, plen);
      p2 = client(SOCK_SEQPACKET, &sa, slen);
      if (p1 < 0 || p2 < 0 || send(p1, "pending-stream-data", 19, 0) != 19 || send(p2, "pending-1", 9, 0) != 9 ||
          send(p2, "pending-second", 14, 0) != 14)
        return 2;
    }
    if (write(ready[1], "R", 1) != 1) return 2;
    close(ready[1]);
    prog_wait_usr1();
    check_name(c1, 1, &pa, plen, "child stream client");
    check_name(c2, 1, &sa, slen, "child seqpacket client");
    expect_msg(c1, "down-stream", "child stream queue");
    expect_empty(c1, "child stream queue");
    expect_msg(c2, "down-seq", "child seqpacket queue");
    expect_empty(c2, "child seqpacket queue");
    if (pending) {
      check_name(p1, 1, &pa, plen, "child waiting stream client");
      check_name(p2, 1, &sa, slen, "child waiting seqpacket client");
      expect_word(p1, "welcome-1", "waiting stream client, once accepted");
      expect_word(p2, "welcome-2", "waiting seqpacket client, once accepted");
    }
    CHECK(send(c1, "after-c", 7, 0) == 7 && send(c2, "after-c", 7, 0) == 7, "child sends");
    expect_word(c1, "after-p", "child stream after");
    expect_word(c2, "after-p", "child seqpacket after");
    return prog_finish();
  }
  close(ready[1]);
  close(down[0]);
  char r;
  if (read(ready[0], &r, 1) != 1 || r != 'C') return 2;
  int a1 = accept(l1, NULL, NULL), a2 = accept(l2, NULL, NULL);
  /* A client of our own, bound to an abstract name before it connects. */
  int c3 = socket(AF_UNIX, SOCK_STREAM, 0);
  if (a1 < 0 || a2 < 0 || c3 < 0 || bind(c3, (struct sockaddr*)&ca, clen) || connect(c3, (struct sockaddr*)&pa, plen))
    return 2;
  int a3 = accept(l1, NULL, NULL);
  if (a3 < 0 || send(a1, "down-stream", 11, 0) != 11 || send(a2, "down-seq", 8, 0) != 8 ||
      send(c3, "c3-to-a3", 8, 0) != 8 || send(a3, "a3-to-c3", 8, 0) != 8)
    return 2;
  /* Accepted a1, a2 and a3: the child may connect the ones left waiting. */
  if (write(down[1], "A", 1) != 1) return 2;
  close(down[1]);
  if (read(ready[0], &r, 1) != 1 || r != 'R') return 2;
  close(ready[0]);
  prog_ready(argv[1]);
  prog_wait_usr1();

  check_name(l1, 0, &pa, plen, "stream listener");
  check_name(l2, 0, &sa, slen, "seqpacket listener");
  check_name(a1, 0, &pa, plen, "accepted stream socket");
  check_name(a2, 0, &sa, slen, "accepted seqpacket socket");
  check_name(c3, 0, &ca, clen, "bound client");
  check_name(c3, 1, &pa, plen, "bound client's peer");
  check_name(a3, 0, &pa, plen, "socket accepted from the bound client");
  check_name(a3, 1, &ca, clen, "bound client seen from its accepted socket");
  struct stat st;
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0640,
        "%s: mode %o, want a socket with mode 640", path, st.st_mode);
  int acc = 0;
  socklen_t acclen = sizeof(acc);
  CHECK(getsockopt(l1, SOL_SOCKET, SO_ACCEPTCONN, &acc, &acclen) == 0 && acc == 1, "stream listener not listening");
  expect_word(a1, "up-stream", "accepted stream queue");
  expect_empty(a1, "accepted stream queue");
  expect_msg(a2, "up-seq-1", "accepted seqpacket queue 1");
  expect_msg(a2, "up-seq-two", "accepted seqpacket queue 2");
  expect_empty(a2, "accepted seqpacket queue");
  expect_word(a3, "c3-to-a3", "bound client to accepted");
  expect_word(c3, "a3-to-c3", "accepted to bound client");
  if (pending) {
    int p1 = accept_now(l1), p2 = accept_now(l2);
    CHECK(p1 >= 0 && p2 >= 0, "the waiting connections cannot be accepted: %s", strerror(errno));
    if (p1 >= 0) {
      expect_word(p1, "pending-stream-data", "waiting stream connection");
      expect_empty(p1, "waiting stream connection");
      check_name(p1, 0, &pa, plen, "waiting stream connection, accepted");
      CHECK(send(p1, "welcome-1", 9, 0) == 9, "send to the waiting stream client");
    }
    if (p2 >= 0) {
      expect_msg(p2, "pending-1", "waiting seqpacket connection 1");
      expect_msg(p2, "pending-second", "waiting seqpacket connection 2");
      expect_empty(p2, "waiting seqpacket connection");
      CHECK(send(p2, "welcome-2", 9, 0) == 9, "send to the waiting seqpacket client");
    }
  }
  /* Nothing else was waiting. */
  int none = accept_now(l1);
  CHECK(none < 0 && errno == EAGAIN, "an unexpected connection waited on the stream listener");
  none = accept_now(l2);
  CHECK(none < 0 && errno == EAGAIN, "an unexpected connection waited on the seqpacket listener");
  check_listens(l1, SOCK_STREAM, &pa, plen, "stream listener");
  check_listens(l2, SOCK_SEQPACKET, &sa, slen, "seqpacket listener");
  kill(child, SIGUSR1);
  expect_word(a1, "after-c", "parent stream after");
  expect_word(a2, "after-c", "parent seqpacket after");
  CHECK(send(a1, "after-p", 7, 0) == 7 && send(a2, "after-p", 7, 0) == 7, "parent sends");
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  unlink(path);
  return prog_finish();
}
