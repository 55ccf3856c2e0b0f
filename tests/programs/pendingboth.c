/* Connections not yet accepted, with data: a unix stream listener bound in
 * DIR and a TCP listener on loopback, each with a client of this process that
 * connected and wrote a known pattern, which nobody accepted. A dump that
 * kills the tree must take them from the accept queues (its destructive
 * step); one that fails must leave them waiting.
 *
 *   pendingboth READY DIR
 *
 * After SIGUSR1: accepts both, reads every byte the clients wrote (checking
 * the pattern), answers, and each client reads its answer. Exit 0 only if
 * everything held. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "prog_common.h"

#define UNIX_LEN (96 * 1024)
#define TCP_LEN (40 * 1024)

static uint8_t pattern(int seed, size_t i) { return (uint8_t)prog_hash((uint64_t)seed << 32 | i); }

static int write_pattern(int fd, int seed, size_t len) {
  uint8_t buf[4096];
  for (size_t done = 0; done < len;) {
    size_t n = len - done < sizeof buf ? len - done : sizeof buf;
    for (size_t i = 0; i < n; i++) buf[i] = pattern(seed, done + i);
    ssize_t w = write(fd, buf, n);
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

static void check_pattern(int fd, int seed, size_t len, const char* what) {
  uint8_t buf[4096];
  size_t bad = 0, got = 0;
  while (got < len) {
    size_t want = len - got < sizeof buf ? len - got : sizeof buf;
    size_t n = prog_read_exact(fd, buf, want);
    for (size_t i = 0; i < n; i++) bad += buf[i] != pattern(seed, got + i);
    got += n;
    if (n < want) break;
  }
  CHECK(got == len && bad == 0, "%s: %zu of %zu bytes, %zu differ", what, got, (size_t)len, bad);
  int more = 0;
  CHECK(recv(fd, &more, sizeof more, MSG_DONTWAIT) < 0 && errno == EAGAIN, "%s: no byte beyond the data", what);
}

static void answer(int server, int client, const char* what) {
  CHECK(write(server, "thanks", 6) == 6, "%s: answer", what);
  char buf[6];
  CHECK(prog_read_exact(client, buf, 6) == 6 && memcmp(buf, "thanks", 6) == 0, "%s: the client's answer", what);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();

  struct sockaddr_un ua = {0};
  ua.sun_family = AF_UNIX;
  snprintf(ua.sun_path, sizeof ua.sun_path, "%s/listener.sock", argv[2]);
  unlink(ua.sun_path);
  int ul = socket(AF_UNIX, SOCK_STREAM, 0);
  if (bind(ul, (struct sockaddr*)&ua, sizeof ua) != 0 || listen(ul, 4) != 0) { perror("unix listen"); return 1; }
  int uc = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(uc, (struct sockaddr*)&ua, sizeof ua) != 0) { perror("unix connect"); return 1; }
  if (write_pattern(uc, 1, UNIX_LEN) != 0) { perror("unix write"); return 1; }

  struct sockaddr_in ta = {0};
  ta.sin_family = AF_INET;
  ta.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int tl = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t len = sizeof ta;
  if (bind(tl, (struct sockaddr*)&ta, sizeof ta) != 0 || listen(tl, 4) != 0 ||
      getsockname(tl, (struct sockaddr*)&ta, &len) != 0) { perror("tcp listen"); return 1; }
  int tc = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(tc, (struct sockaddr*)&ta, sizeof ta) != 0) { perror("tcp connect"); return 1; }
  if (write_pattern(tc, 2, TCP_LEN) != 0) { perror("tcp write"); return 1; }
  /* Give the data time to land in the accept queue's socket. */
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);

  prog_ready(argv[1]);
  prog_wait_usr1();

  int us = accept(ul, NULL, NULL);
  CHECK(us >= 0, "unix accept: %s", strerror(errno));
  int ts_ = accept(tl, NULL, NULL);
  CHECK(ts_ >= 0, "tcp accept: %s", strerror(errno));
  if (us >= 0) {
    check_pattern(us, 1, UNIX_LEN, "unix");
    answer(us, uc, "unix");
  }
  if (ts_ >= 0) {
    check_pattern(ts_, 2, TCP_LEN, "tcp");
    answer(ts_, tc, "tcp");
  }
  return prog_finish();
}
