/* UDP sockets bound and connected to each other (IPv4 and IPv6, one of them
 * non-blocking): after restore their addresses are the same and datagrams
 * pass both ways. Datagrams left queued come back in order with their
 * senders: on a connected socket from its peer, and on an unconnected one
 * from a sender of the tree and from one closed before the dump. Also the
 * inet sockets that are not connected: a TCP socket
 * bound to a port (SO_REUSEADDR) and one neither bound nor connected, which
 * come back as they were and can still listen. Exit 0 only if everything
 * held. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "prog_common.h"

struct pair { int a, b; struct sockaddr_storage a_name, b_name; };

static int same_name(int fd, const struct sockaddr_storage* want, int peer) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  if ((peer ? getpeername(fd, (struct sockaddr*)&ss, &len) : getsockname(fd, (struct sockaddr*)&ss, &len)) != 0) return 0;
  return memcmp(&ss, want, sizeof(ss)) == 0;
}

static int make_pair(int family, struct pair* p) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t len;
  if (family == AF_INET6) {
    struct sockaddr_in6* s = (struct sockaddr_in6*)&ss;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    len = sizeof(*s);
  } else {
    struct sockaddr_in* s = (struct sockaddr_in*)&ss;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*s);
  }
  p->a = socket(family, SOCK_DGRAM, 0);
  p->b = socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (bind(p->a, (struct sockaddr*)&ss, len) != 0 || bind(p->b, (struct sockaddr*)&ss, len) != 0) return -1;
  memset(&p->a_name, 0, sizeof(p->a_name));
  memset(&p->b_name, 0, sizeof(p->b_name));
  socklen_t l = sizeof(p->a_name);
  getsockname(p->a, (struct sockaddr*)&p->a_name, &l);
  l = sizeof(p->b_name);
  getsockname(p->b, (struct sockaddr*)&p->b_name, &l);
  if (connect(p->a, (struct sockaddr*)&p->b_name, len) != 0 || connect(p->b, (struct sockaddr*)&p->a_name, len) != 0) return -1;
  return 0;
}

static int exchange(struct pair* p, const char* msg) {
  char buf[64];
  if (send(p->a, msg, strlen(msg), 0) != (ssize_t)strlen(msg)) return 0;
  for (int i = 0; i < 100; i++) {
    ssize_t n = recv(p->b, buf, sizeof(buf), 0);
    if (n == (ssize_t)strlen(msg) && memcmp(buf, msg, (size_t)n) == 0) break;
    if (n >= 0 || errno != EAGAIN || i == 99) return 0;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (send(p->b, "back", 4, 0) != 4) return 0;
  ssize_t n = recv(p->a, buf, sizeof(buf), 0);
  return n == 4 && memcmp(buf, "back", 4) == 0;
}

static int expect_dgram(int fd, const char* want, size_t len, const struct sockaddr_storage* from) {
  char buf[2048];
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr*)&ss, &sl);
  if (n != (ssize_t)len || memcmp(buf, want, len) != 0) {
    fprintf(stderr, "got %zd bytes, expected %zu\n", n, len);
    return 0;
  }
  return memcmp(&ss, from, sizeof(ss)) == 0;
}

int main(int argc, char** argv) {
  (void)argc;
  prog_install_usr1();
  struct pair v4, v6;
  CHECK(make_pair(AF_INET, &v4) == 0, "v4 pair");
  CHECK(make_pair(AF_INET6, &v6) == 0, "v6 pair");
  CHECK(exchange(&v4, "before v4"), "v4 before");
  CHECK(exchange(&v6, "before v6"), "v6 before");
  /* Queued: three datagrams on v4.b from its peer; two on c from v4.a and
   * from a socket closed since. */
  char big[1000];
  for (int i = 0; i < 1000; i++) big[i] = (char)(i * 7);
  CHECK(send(v4.a, "q1", 2, 0) == 2 && send(v4.a, "queued two", 10, 0) == 10 && send(v4.a, big, 1000, 0) == 1000,
        "queueing on b");
  int c = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in any4 = {0};
  any4.sin_family = AF_INET;
  any4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct sockaddr_storage c_name, t_name;
  memset(&c_name, 0, sizeof(c_name));
  memset(&t_name, 0, sizeof(t_name));
  socklen_t nl = sizeof(c_name);
  CHECK(bind(c, (struct sockaddr*)&any4, sizeof(any4)) == 0 && bind(t, (struct sockaddr*)&any4, sizeof(any4)) == 0, "bind c, t");
  getsockname(c, (struct sockaddr*)&c_name, &nl);
  nl = sizeof(t_name);
  getsockname(t, (struct sockaddr*)&t_name, &nl);
  CHECK(sendto(t, "from gone", 9, 0, (struct sockaddr*)&c_name, sizeof(struct sockaddr_in)) == 9, "t to c");
  close(t);
  CHECK(sendto(v4.a, "from a", 6, 0, (struct sockaddr*)&c_name, sizeof(struct sockaddr_in)) == 6, "a to c");
  struct timespec settle = {0, 20 * 1000 * 1000};
  nanosleep(&settle, NULL);
  int bound = socket(AF_INET, SOCK_STREAM, 0), fresh = socket(AF_INET6, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(bound, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_storage bound_name;
  memset(&bound_name, 0, sizeof(bound_name));
  struct sockaddr_in* bn = (struct sockaddr_in*)&bound_name;
  bn->sin_family = AF_INET;
  bn->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(bound, (struct sockaddr*)bn, sizeof(*bn)) == 0, "bind");
  socklen_t bl = sizeof(bound_name);
  getsockname(bound, (struct sockaddr*)&bound_name, &bl);
  prog_ready(argv[1]);
  prog_wait_usr1();
  CHECK(expect_dgram(v4.b, "q1", 2, &v4.a_name), "b: first queued datagram");
  CHECK(expect_dgram(v4.b, "queued two", 10, &v4.a_name), "b: second queued datagram");
  CHECK(expect_dgram(v4.b, big, 1000, &v4.a_name), "b: third queued datagram");
  char none;
  CHECK(recv(v4.b, &none, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "b: nothing more queued");
  CHECK(expect_dgram(c, "from gone", 9, &t_name), "c: the datagram of a closed sender");
  CHECK(expect_dgram(c, "from a", 6, &v4.a_name), "c: the datagram of a");
  CHECK(recv(c, &none, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "c: nothing more queued");
  CHECK(same_name(bound, &bound_name, 0), "the bound TCP socket's name");
  int v = 0;
  socklen_t vl = sizeof(v);
  CHECK(getsockopt(bound, SOL_SOCKET, SO_REUSEADDR, &v, &vl) == 0 && v == 1, "SO_REUSEADDR");
  CHECK(listen(bound, 1) == 0, "the bound TCP socket listens: %s", strerror(errno));
  struct sockaddr_in6 fn;
  socklen_t fl = sizeof(fn);
  CHECK(getsockname(fresh, (struct sockaddr*)&fn, &fl) == 0 && fn.sin6_family == AF_INET6 && fn.sin6_port == 0,
        "the unbound TCP socket");
  CHECK(listen(fresh, 1) == 0, "the unbound TCP socket listens: %s", strerror(errno));
  struct pair* ps[2] = {&v4, &v6};
  for (int i = 0; i < 2; i++) {
    struct pair* p = ps[i];
    CHECK(same_name(p->a, &p->a_name, 0) && same_name(p->a, &p->b_name, 1), "pair %d: a's addresses", i);
    CHECK(same_name(p->b, &p->b_name, 0) && same_name(p->b, &p->a_name, 1), "pair %d: b's addresses", i);
    CHECK((fcntl(p->b, F_GETFL) & O_NONBLOCK) && !(fcntl(p->a, F_GETFL) & O_NONBLOCK), "pair %d: O_NONBLOCK", i);
    CHECK(exchange(p, "after"), "pair %d: after", i);
  }
  return prog_finish();
}
