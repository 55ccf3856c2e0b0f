/* A TCP socket still connecting (SYN_SENT) at the dump: a non-blocking
 * connect to a listener of the tree whose classic filter drops every packet
 * (so the SYN gets no answer), with an option set on the connecting socket.
 *
 *   tcpsyn READY DIR
 *
 * After SIGUSR1 the connecting socket is still connecting to the same
 * listener (getpeername fails with ENOTCONN, the option is there); once the
 * listener's filter is detached, the connection completes, is accepted, and
 * carries data both ways. Exit 0 only if all of it held. */
#include "prog_common.h"  /* first: _GNU_SOURCE */

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>


int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 4) != 0 ||
      getsockname(l, (struct sockaddr*)&a, &alen) != 0)
    return 2;
  struct sock_filter drop[] = {{BPF_RET | BPF_K, 0, 0, 0}};
  struct sock_fprog prog = {1, drop};
  if (setsockopt(l, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) return 2;

  int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int nodelay = 1;
  if (c < 0 || setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay) != 0) return 2;
  if (connect(c, (struct sockaddr*)&a, sizeof a) == 0 || errno != EINPROGRESS) return 3;
  struct sockaddr_in mine = {0};
  socklen_t mlen = sizeof mine;
  getsockname(c, (struct sockaddr*)&mine, &mlen);

  prog_ready(argv[1]);
  prog_wait_usr1();

  struct sockaddr_in peer;
  socklen_t plen = sizeof peer;
  CHECK(getpeername(c, (struct sockaddr*)&peer, &plen) != 0 && errno == ENOTCONN, "still connecting");
  struct sockaddr_in now = {0};
  socklen_t nlen = sizeof now;
  CHECK(getsockname(c, (struct sockaddr*)&now, &nlen) == 0 && now.sin_port == mine.sin_port,
        "the same local port %d, want %d", ntohs(now.sin_port), ntohs(mine.sin_port));
  int v = 0;
  socklen_t vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 1, "TCP_NODELAY");
  CHECK(fcntl(c, F_GETFL) & O_NONBLOCK, "still non-blocking");
  CHECK(setsockopt(l, SOL_SOCKET, SO_DETACH_FILTER, &v, sizeof v) == 0, "detach the listener's filter");
  /* The SYN is sent again (1 s, then 3 s...). */
  struct pollfd p = {c, POLLOUT, 0};
  CHECK(poll(&p, 1, 10000) == 1 && (p.revents & POLLOUT), "the connection completes");
  int err = -1;
  socklen_t elen = sizeof err;
  CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0, "SO_ERROR %d", err);
  int s = accept(l, NULL, NULL);
  CHECK(s >= 0, "accept: %s", strerror(errno));
  if (s >= 0) {
    char buf[8] = {0};
    CHECK(write(s, "hi", 2) == 2, "write");
    struct pollfd r = {c, POLLIN, 0};
    CHECK(poll(&r, 1, 2000) == 1 && read(c, buf, sizeof buf) == 2 && memcmp(buf, "hi", 2) == 0, "data arrives");
    CHECK(write(c, "yo", 2) == 2 && read(s, buf, sizeof buf) == 2 && memcmp(buf, "yo", 2) == 0, "data back");
  }
  return prog_failures ? 1 : 0;
}
