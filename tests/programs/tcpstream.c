/* A TCP connection streaming a checked byte sequence in both directions, to a
 * fixed total. Until SIGUSR1 each side reads slowly and writes as fast as it
 * can, so that both send queues and both receive queues hold data when it is
 * dumped; after SIGUSR1 both read at full speed, and every byte must arrive,
 * in order, none missing, none twice.
 *
 *   tcpstream READY DIR pair v4|v6|mapped   server and client in this tree
 *                                           (mapped: an AF_INET client to an
 *                                           AF_INET6 listener on ::)
 *   tcpstream READY DIR server PORT         the server end only (127.0.0.1)
 *   tcpstream READY DIR client PORT         the client end only
 *
 * The listener stays open; after the stream the server checks that it still
 * accepts. Exit 0 only if everything held. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "prog_common.h"

#define TOTAL (6u << 20)

static uint8_t pattern(uint64_t i, int dir) { return (uint8_t)(prog_hash(i / 8 + (uint64_t)dir * 977) >> (8 * (i % 8))); }

static int family_of(const char* mode) { return strcmp(mode, "v6") == 0 || strcmp(mode, "mapped") == 0 ? AF_INET6 : AF_INET; }

static socklen_t addr_for(int family, const char* mode, int port, struct sockaddr_storage* ss, int listening) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET6) {
    struct sockaddr_in6* s = (struct sockaddr_in6*)ss;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    s->sin6_addr = (listening && strcmp(mode, "mapped") == 0) ? in6addr_any : in6addr_loopback;
    return sizeof(*s);
  }
  struct sockaddr_in* s = (struct sockaddr_in*)ss;
  s->sin_family = AF_INET;
  s->sin_port = htons(port);
  s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sizeof(*s);
}

/* Streams until both directions reached TOTAL. dir: 0 server, 1 client.
 * notify: written once when this side's queues are full (-1: none). */
static int stream(int fd, int dir, int notify) {
  static uint8_t buf[65536];
  uint64_t sent = 0, recvd = 0;
  int notified = 0;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  while (sent < TOTAL || recvd < TOTAL) {
    struct pollfd p = {fd, (short)(POLLIN | (sent < TOTAL ? POLLOUT : 0)), 0};
    if (poll(&p, 1, 20) < 0 && errno != EINTR) { perror("poll"); return 1; }
    if (sent < TOTAL && (p.revents & POLLOUT)) {
      size_t n = TOTAL - sent < sizeof(buf) ? TOTAL - sent : sizeof(buf);
      for (size_t i = 0; i < n; i++) buf[i] = pattern(sent + i, dir);
      ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
      if (w > 0) sent += (uint64_t)w;
      else if (w < 0 && errno != EAGAIN && errno != EINTR) { perror("send"); return 1; }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      size_t want = prog_usr1 ? sizeof(buf) : 256;
      ssize_t r = recv(fd, buf, want, 0);
      if (r == 0) { fprintf(stderr, "side %d: EOF after %llu bytes\n", dir, (unsigned long long)recvd); return 1; }
      if (r < 0 && errno != EAGAIN && errno != EINTR) { perror("recv"); return 1; }
      for (ssize_t i = 0; i < r; i++)
        if (buf[i] != pattern(recvd + (uint64_t)i, !dir)) {
          fprintf(stderr, "side %d: byte %llu is %#x, expected %#x\n", dir, (unsigned long long)(recvd + i),
                  buf[i], pattern(recvd + (uint64_t)i, !dir));
          return 1;
        }
      if (r > 0) recvd += (uint64_t)r;
    }
    if (!prog_usr1) {
      int inq = 0, outq = 0;
      ioctl(fd, SIOCINQ, &inq);
      ioctl(fd, SIOCOUTQ, &outq);
      if (!notified && notify >= 0 && inq > 0 && outq > 0 && sent > (256u << 10)) {
        notified = 1;
        if (write(notify, "r", 1) != 1) return 1;
      }
      struct timespec ts = {0, 2 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  fprintf(stderr, "side %d: %llu bytes each way\n", dir, (unsigned long long)sent);
  return 0;
}

static void wait_byte(int fd) {
  char c;
  while (read(fd, &c, 1) < 0 && errno == EINTR) {}
}

static int listener_still_accepts(int lfd, int family, const char* mode) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(lfd, (struct sockaddr*)&ss, &len) != 0) return 0;
  int port = family == AF_INET6 ? ntohs(((struct sockaddr_in6*)&ss)->sin6_port) : ntohs(((struct sockaddr_in*)&ss)->sin_port);
  int cfamily = strcmp(mode, "mapped") == 0 ? AF_INET : family;
  int c = socket(cfamily, SOCK_STREAM, 0);
  socklen_t clen = addr_for(cfamily, mode, port, &ss, 0);
  if (connect(c, (struct sockaddr*)&ss, clen) != 0) { perror("connect to the listener"); return 0; }
  int flags = fcntl(lfd, F_GETFL);
  fcntl(lfd, F_SETFL, flags & ~O_NONBLOCK);
  int a = accept(lfd, NULL, NULL);
  if (a < 0) { perror("accept"); return 0; }
  close(a);
  close(c);
  return 1;
}

/* The root: waits until every streamer has full queues, says ready, waits
 * for SIGUSR1 and hands it on to them. */
static void ready_then_forward(const char* ready, int ready_fd, pid_t* kids, int n) {
  for (int i = 0; i < n; i++) wait_byte(ready_fd);
  prog_ready(ready);
  prog_wait_usr1();
  for (int i = 0; i < n; i++) kill(kids[i], SIGUSR1);
  for (int i = 0; i < n; i++) {
    int st = 0;
    waitpid(kids[i], &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "streamer %d (status %#x)", i, st);
  }
}

int main(int argc, char** argv) {
  if (argc < 5) { fprintf(stderr, "usage: tcpstream READY DIR pair|server|client MODE|PORT\n"); return 2; }
  prog_install_usr1();
  const char* role = argv[3];
  int ready_pipe[2];
  if (pipe(ready_pipe) != 0) return 1;
  if (strcmp(role, "client") == 0) {
    struct sockaddr_storage ss;
    socklen_t len = addr_for(AF_INET, "v4", atoi(argv[4]), &ss, 0);
    /* The server may still be on its way to listen(). */
    int fd = -1;
    for (int i = 0; i < 500 && fd < 0; i++) {
      fd = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(fd, (struct sockaddr*)&ss, len) != 0) {
        close(fd);
        fd = -1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
      }
    }
    if (fd < 0) { perror("connect"); return 1; }
    pid_t kid = fork();
    if (kid == 0) _exit(stream(fd, 1, ready_pipe[1]));
    close(fd);
    ready_then_forward(argv[1], ready_pipe[0], &kid, 1);
    return prog_finish();
  }
  const char* mode = strcmp(role, "server") == 0 ? "v4" : argv[4];
  int family = family_of(mode);
  int lfd = socket(family, SOCK_STREAM, 0);
  int one = 1, zero = 0;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6) setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  struct sockaddr_storage ss;
  socklen_t len = addr_for(family, mode, strcmp(role, "server") == 0 ? atoi(argv[4]) : 0, &ss, 1);
  if (bind(lfd, (struct sockaddr*)&ss, len) != 0) { perror("bind"); return 1; }
  if (listen(lfd, 8) != 0) { perror("listen"); return 1; }
  len = sizeof(ss);
  getsockname(lfd, (struct sockaddr*)&ss, &len);
  int port = family == AF_INET6 ? ntohs(((struct sockaddr_in6*)&ss)->sin6_port) : ntohs(((struct sockaddr_in*)&ss)->sin_port);

  pid_t kids[2];
  int n = 0;
  if (strcmp(role, "pair") == 0) {
    pid_t child = fork();
    if (child == 0) {
      close(lfd);
      int cfamily = strcmp(mode, "mapped") == 0 ? AF_INET : family;
      int fd = socket(cfamily, SOCK_STREAM, 0);
      int nodelay = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
      struct sockaddr_storage cs;
      socklen_t clen = addr_for(cfamily, mode, port, &cs, 0);
      if (connect(fd, (struct sockaddr*)&cs, clen) != 0) { perror("connect"); _exit(1); }
      _exit(stream(fd, 1, ready_pipe[1]));
    }
    kids[n++] = child;
  }
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0) { perror("accept"); return 1; }
  int keepalive = 1;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive, sizeof(keepalive));
  pid_t streamer = fork();
  if (streamer == 0) _exit(stream(fd, 0, ready_pipe[1]));
  close(fd);
  kids[n++] = streamer;
  ready_then_forward(argv[1], ready_pipe[0], kids, n);
  CHECK(listener_still_accepts(lfd, family, mode), "the listener accepts after the stream");
  return prog_finish();
}
