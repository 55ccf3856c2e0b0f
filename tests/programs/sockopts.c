/* Socket options beyond the usual ones, on a TCP listener, a TCP connection
 * (both ends here), UDP sockets (IPv4 and IPv6) and a unix socket pair, and
 * classic BPF filters.
 *
 *   sockopts READY DIR          options and filters as below
 *   sockopts READY DIR ebpf     also an eBPF filter (SO_ATTACH_BPF) on a UDP
 *                               socket: a dump must refuse it in one line
 *
 * After SIGUSR1 every option reads back as it was set, the connection still
 * carries data both ways, the UDP socket whose filter drops everything still
 * receives nothing, and the one bound to "lo" still receives. Exit 0 only if
 * everything held. */
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "prog_common.h"

struct intopt {
  int fd, level, name, value;
  const char* what;
};

static struct intopt opts[64];
static int nopts;

/* The value expected afterwards is what the kernel reports right after the
 * set: it rounds some (TCP_DEFER_ACCEPT to retransmits, timeouts to jiffies). */
static void set_int(int fd, int level, int name, int value, const char* what) {
  socklen_t len = sizeof value;
  if (setsockopt(fd, level, name, &value, sizeof value) != 0 || getsockopt(fd, level, name, &value, &len) != 0) {
    fprintf(stderr, "setsockopt %s: %s\n", what, strerror(errno));
    exit(2);
  }
  opts[nopts++] = (struct intopt){fd, level, name, value, what};
}

static struct timeval set_timeo(int fd, int name, long sec, long usec) {
  struct timeval tv = {sec, usec};
  socklen_t len = sizeof tv;
  if (setsockopt(fd, SOL_SOCKET, name, &tv, sizeof tv) != 0 || getsockopt(fd, SOL_SOCKET, name, &tv, &len) != 0)
    exit(2);
  return tv;
}

static void check_timeo(int fd, int name, struct timeval want, const char* what) {
  struct timeval tv = {0, 0};
  socklen_t len = sizeof tv;
  CHECK(getsockopt(fd, SOL_SOCKET, name, &tv, &len) == 0 && tv.tv_sec == want.tv_sec && tv.tv_usec == want.tv_usec,
        "%s: %ld.%06ld, want %ld.%06ld", what, (long)tv.tv_sec, (long)tv.tv_usec, (long)want.tv_sec,
        (long)want.tv_usec);
}

static void check_string(int fd, int level, int name, const char* want, const char* what) {
  char buf[32] = {0};
  socklen_t len = sizeof buf;
  CHECK(getsockopt(fd, level, name, buf, &len) == 0 && strcmp(buf, want) == 0, "%s: '%s', want '%s'", what, buf,
        want);
}

static void attach(int fd, struct sock_filter* code, unsigned short n) {
  struct sock_fprog prog = {n, code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) exit(2);
}

static void check_filter(int fd, struct sock_filter* want, unsigned n, const char* what) {
  struct sock_filter got[8];
  socklen_t count = 8;
  CHECK(getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, got, &count) == 0 && count == n &&
            memcmp(got, want, n * sizeof *want) == 0,
        "%s: a filter of %u instructions, want %u", what, (unsigned)count, n);
}

static int udp_bound(int family, struct sockaddr_storage* at, socklen_t* len) {
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  memset(at, 0, sizeof *at);
  if (family == AF_INET) {
    struct sockaddr_in* a = (struct sockaddr_in*)at;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *len = sizeof *a;
  } else {
    struct sockaddr_in6* a = (struct sockaddr_in6*)at;
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    *len = sizeof *a;
  }
  if (fd < 0 || bind(fd, (struct sockaddr*)at, *len) != 0 || getsockname(fd, (struct sockaddr*)at, len) != 0)
    exit(2);
  return fd;
}

/* "Receives" says whether a datagram sent to the socket arrives. */
static int receives(int fd, const struct sockaddr_storage* at, socklen_t len) {
  int s = socket(at->ss_family, SOCK_DGRAM, 0);
  if (s < 0 || sendto(s, "ping", 4, 0, (const struct sockaddr*)at, len) != 4) exit(2);
  close(s);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  char buf[8];
  return recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 4;
}

static int load_ebpf_filter(void) {
  /* r0 = 0; exit: drops every packet. */
  struct bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = (uint64_t)(uintptr_t)insns;
  attr.insn_cnt = 2;
  attr.license = (uint64_t)(uintptr_t) "GPL";
  return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int ebpf = argc > 3 && strcmp(argv[3], "ebpf") == 0;
  prog_install_usr1();

  /* A TCP listener and a connection to it, both ends here. */
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  set_int(l, IPPROTO_TCP, TCP_FASTOPEN, 16, "listener TCP_FASTOPEN");
  set_int(l, IPPROTO_TCP, TCP_MAXSEG, 1000, "listener TCP_MAXSEG");
  set_int(l, IPPROTO_IP, IP_TTL, 33, "listener IP_TTL");
  set_int(l, SOL_SOCKET, SO_PRIORITY, 4, "listener SO_PRIORITY");
  set_int(l, IPPROTO_IP, IP_FREEBIND, 1, "listener IP_FREEBIND");
  if (setsockopt(l, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) != 0) return 2;
  socklen_t alen = sizeof a;
  if (bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 4) != 0 ||
      getsockname(l, (struct sockaddr*)&a, &alen) != 0)
    return 2;
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (struct sockaddr*)&a, sizeof a) != 0) return 2;
  int s = accept(l, NULL, NULL);
  if (s < 0) return 2;
  /* After the accept: it holds a connection back until data comes. */
  set_int(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5, "listener TCP_DEFER_ACCEPT");
  set_int(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384, "client TCP_NOTSENT_LOWAT");
  set_int(c, IPPROTO_IP, IP_TTL, 44, "client IP_TTL");
  set_int(c, SOL_SOCKET, SO_PRIORITY, 2, "client SO_PRIORITY");
  set_int(c, SOL_SOCKET, SO_OOBINLINE, 1, "client SO_OOBINLINE");
  set_int(s, IPPROTO_TCP, TCP_LINGER2, 7, "server TCP_LINGER2");
  set_int(s, SOL_SOCKET, SO_RCVLOWAT, 3, "server SO_RCVLOWAT");
  if (setsockopt(c, IPPROTO_TCP, TCP_CONGESTION, "bbr", 3) != 0) return 2;
  struct timeval c_rcv = set_timeo(c, SO_RCVTIMEO, 2, 500000);
  struct timeval s_snd = set_timeo(s, SO_SNDTIMEO, 1, 250000);

  /* UDP: one bound to "lo" with per-packet information on, one whose
   * filter drops everything, one over IPv6. */
  struct sockaddr_storage at_lo, at_drop, at6;
  socklen_t len_lo, len_drop, len6;
  int u = udp_bound(AF_INET, &at_lo, &len_lo);
  if (setsockopt(u, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) != 0) return 2;
  set_int(u, IPPROTO_IP, IP_RECVERR, 1, "udp IP_RECVERR");
  set_int(u, IPPROTO_IP, IP_PKTINFO, 1, "udp IP_PKTINFO");
  set_int(u, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO, "udp IP_MTU_DISCOVER");
  set_int(u, IPPROTO_IP, IP_MULTICAST_TTL, 5, "udp IP_MULTICAST_TTL");
  set_int(u, SOL_SOCKET, SO_TIMESTAMPNS_OLD, 1, "udp SO_TIMESTAMPNS");
  struct sock_filter accept_all[] = {BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_RET | BPF_K, 0xffffffff)};
  attach(u, accept_all, 2);
  int drop = udp_bound(AF_INET, &at_drop, &len_drop);
  struct sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
  attach(drop, drop_all, 1);
  set_int(drop, SOL_SOCKET, SO_LOCK_FILTER, 1, "drop SO_LOCK_FILTER");
  int u6 = udp_bound(AF_INET6, &at6, &len6);
  set_int(u6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 17, "udp6 IPV6_UNICAST_HOPS");
  set_int(u6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, "udp6 IPV6_RECVPKTINFO");
  if (ebpf) {
    int prog = load_ebpf_filter();
    int e = socket(AF_INET, SOCK_DGRAM, 0);
    if (prog < 0 || setsockopt(e, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) != 0) {
      perror("eBPF filter");
      return 2;
    }
    close(prog);  /* the socket holds the program now */
  }

  /* A unix pair with options of its own and a filter. */
  int up[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, up) != 0) return 2;
  set_int(up[0], SOL_SOCKET, SO_PRIORITY, 3, "unix SO_PRIORITY");
  set_int(up[1], SOL_SOCKET, SO_RCVLOWAT, 5, "unix SO_RCVLOWAT");
  set_int(up[1], SOL_SOCKET, SO_PASSSEC, 1, "unix SO_PASSSEC");
  struct timeval u_rcv = set_timeo(up[0], SO_RCVTIMEO, 3, 0);
  attach(up[1], accept_all, 2);

  prog_ready(argv[1]);
  prog_wait_usr1();

  for (int i = 0; i < nopts; i++) {
    int v = -1;
    socklen_t vl = sizeof v;
    CHECK(getsockopt(opts[i].fd, opts[i].level, opts[i].name, &v, &vl) == 0 && v == opts[i].value,
          "%s: %d, want %d", opts[i].what, v, opts[i].value);
  }
  check_string(l, IPPROTO_TCP, TCP_CONGESTION, "reno", "listener TCP_CONGESTION");
  check_string(c, IPPROTO_TCP, TCP_CONGESTION, "bbr", "client TCP_CONGESTION");
  check_string(u, SOL_SOCKET, SO_BINDTODEVICE, "lo", "udp SO_BINDTODEVICE");
  check_timeo(c, SO_RCVTIMEO, c_rcv, "client SO_RCVTIMEO");
  check_timeo(s, SO_SNDTIMEO, s_snd, "server SO_SNDTIMEO");
  check_timeo(up[0], SO_RCVTIMEO, u_rcv, "unix SO_RCVTIMEO");
  check_filter(u, accept_all, 2, "udp filter");
  check_filter(drop, drop_all, 1, "drop filter");
  check_filter(up[1], accept_all, 2, "unix filter");
  /* A locked filter cannot be detached. */
  int zero = 0;
  CHECK(setsockopt(drop, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero) != 0 && errno == EPERM,
        "drop: the filter is not locked any more");
  CHECK(receives(u, &at_lo, len_lo), "udp bound to lo: the datagram did not arrive");
  CHECK(!receives(drop, &at_drop, len_drop), "udp with a drop-all filter: a datagram arrived");
  CHECK(receives(u6, &at6, len6), "udp6: the datagram did not arrive");
  /* The connection and the pair still carry data. */
  char buf[8] = {0};
  CHECK(write(c, "hello", 5) == 5 && prog_read_exact(s, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0, "tcp c->s");
  CHECK(write(s, "back!", 5) == 5 && prog_read_exact(c, buf, 5) == 5 && memcmp(buf, "back!", 5) == 0, "tcp s->c");
  CHECK(write(up[0], "unix!", 5) == 5 && prog_read_exact(up[1], buf, 5) == 5 && memcmp(buf, "unix!", 5) == 0,
        "unix pair");
  return prog_finish();
}
