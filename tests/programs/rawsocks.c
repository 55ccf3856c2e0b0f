/* Socket families and protocols beyond unix, TCP and UDP:
 *
 *   - a packet socket (SOCK_RAW, ethertype 0x88b5) bound to lo, with
 *     PACKET_AUXDATA and PACKET_ORIGDEV, and an unbound SOCK_DGRAM one;
 *   - a netlink route socket (autobound port id) in group RTNLGRP_NSID, with
 *     NETLINK_EXT_ACK, and a generic one bound to a port id of our choice;
 *   - raw IP sockets: IPv4 protocol 253 bound and connected to 127.0.0.1, an
 *     ICMP one with an ICMP_FILTER that blocks every type, IPv6 protocol 253
 *     with IPV6_CHECKSUM;
 *   - an ICMP ping socket bound to 127.0.0.1 and connected (gid 0 is let
 *     into net.ipv4.ping_group_range for the run, and the range put back);
 *   - two UDP-Lite sockets, one connected to the other, with their checksum
 *     coverage.
 *
 *   rawsocks READY DIR            all of the above
 *   rawsocks READY DIR queued     also a raw socket with a packet queued
 *                                 (refused in one line)
 *
 * After SIGUSR1 every socket reads back as it was and still works: the
 * packet socket sees a frame sent on lo, the netlink sockets answer, the raw
 * socket receives a packet, the ping socket an echo reply, the UDP-Lite pair
 * carries a datagram. Exit 0 only if all held. */
#include "prog_common.h"  /* first: _GNU_SOURCE */

#include <arpa/inet.h>
#include <net/if.h>  /* before the <linux/*.h> that include <linux/if.h> */
#include <linux/icmp.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>


#define ETH_P_TEST 0x88b5
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#define SOL_UDPLITE 136
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11

static int geti(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return -1;
  return v;
}

static void seti(int fd, int level, int name, int v, const char* what) {
  if (setsockopt(fd, level, name, &v, sizeof v) != 0) {
    fprintf(stderr, "setsockopt %s: %s\n", what, strerror(errno));
    exit(2);
  }
}

static int readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static struct sockaddr_in lo4(void) {
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static char ping_range[64];
static void put_ping_range_back(void) {
  if (!ping_range[0]) return;
  int fd = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY);
  if (fd >= 0) {
    if (write(fd, ping_range, strlen(ping_range)) < 0) perror("ping_group_range");
    close(fd);
  }
}

static int ping_socket(void) {
  int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
  if (s >= 0 || errno != EACCES) return s;
  /* Let gid 0 in for the run: the restore makes the socket again as root. */
  int fd = open("/proc/sys/net/ipv4/ping_group_range", O_RDWR);
  if (fd < 0) return -1;
  ssize_t n = read(fd, ping_range, sizeof ping_range - 1);
  if (n <= 0) return -1;
  ping_range[n] = 0;
  if (pwrite(fd, "0 0", 3, 0) != 3) return -1;
  close(fd);
  return socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
}

static unsigned short csum(const void* data, size_t n) {
  const unsigned short* p = data;
  unsigned long sum = 0;
  for (; n > 1; n -= 2) sum += *p++;
  if (n) sum += *(const unsigned char*)p;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (unsigned short)~sum;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const char* mode = argc > 3 ? argv[3] : "";
  prog_install_usr1();
  unsigned lo = if_nametoindex("lo");
  if (!lo) return 2;

  /* Packet sockets. */
  int pk = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_TEST));
  if (pk < 0) return 2;
  struct sockaddr_ll ll = {0};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_TEST);
  ll.sll_ifindex = (int)lo;
  if (bind(pk, (struct sockaddr*)&ll, sizeof ll) != 0) return 2;
  seti(pk, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
  seti(pk, SOL_PACKET, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
  int pkd = socket(AF_PACKET, SOCK_DGRAM, 0);
  if (pkd < 0) return 2;

  /* Netlink sockets. */
  int nlr = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
  struct sockaddr_nl nl = {0};
  nl.nl_family = AF_NETLINK;
  if (nlr < 0 || bind(nlr, (struct sockaddr*)&nl, sizeof nl) != 0) return 2;
  seti(nlr, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID, "NETLINK_ADD_MEMBERSHIP");
  seti(nlr, SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
  socklen_t nllen = sizeof nl;
  getsockname(nlr, (struct sockaddr*)&nl, &nllen);
  unsigned nlr_port = nl.nl_pid;
  int nlg = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_GENERIC);
  unsigned nlg_port = 0x7f000000u | ((unsigned)getpid() & 0xffffff);
  nl.nl_pid = nlg_port;
  if (nlg < 0 || bind(nlg, (struct sockaddr*)&nl, sizeof nl) != 0) return 2;

  /* Raw IP sockets. */
  int raw = socket(AF_INET, SOCK_RAW, 253);
  struct sockaddr_in a4 = lo4();
  if (raw < 0 || bind(raw, (struct sockaddr*)&a4, sizeof a4) != 0 || connect(raw, (struct sockaddr*)&a4, sizeof a4) != 0)
    return 2;
  int icmp = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  struct icmp_filter filt = {~0u};
  if (icmp < 0 || setsockopt(icmp, SOL_RAW, ICMP_FILTER, &filt, sizeof filt) != 0) return 2;
  int raw6 = socket(AF_INET6, SOCK_RAW, 253);
  if (raw6 < 0) return 2;
  seti(raw6, IPPROTO_IPV6, IPV6_CHECKSUM, 2, "IPV6_CHECKSUM");

  /* A ping socket. */
  int ping = ping_socket();
  if (ping < 0) {
    perror("ping socket");
    put_ping_range_back();
    return 2;
  }
  struct sockaddr_in pa = lo4();
  pa.sin_port = htons(0x4242);
  if (bind(ping, (struct sockaddr*)&pa, sizeof pa) != 0 || connect(ping, (struct sockaddr*)&a4, sizeof a4) != 0) {
    perror("ping bind/connect");
    put_ping_range_back();
    return 2;
  }

  /* UDP-Lite. */
  int ul = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
  int uc = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
  struct sockaddr_in ua = lo4();
  socklen_t ualen = sizeof ua;
  if (ul < 0 || uc < 0 || bind(ul, (struct sockaddr*)&ua, sizeof ua) != 0 ||
      getsockname(ul, (struct sockaddr*)&ua, &ualen) != 0 || connect(uc, (struct sockaddr*)&ua, sizeof ua) != 0)
    return 2;
  seti(ul, SOL_UDPLITE, UDPLITE_RECV_CSCOV, 20, "UDPLITE_RECV_CSCOV");
  seti(uc, SOL_UDPLITE, UDPLITE_SEND_CSCOV, 20, "UDPLITE_SEND_CSCOV");

  /* The refusals. */
  if (strcmp(mode, "queued") == 0) {
    int q = socket(AF_INET, SOCK_RAW, 252);
    if (q < 0 || bind(q, (struct sockaddr*)&a4, sizeof a4) != 0) return 2;
    if (sendto(q, "queued", 6, 0, (struct sockaddr*)&a4, sizeof a4) != 6 || !readable(q, 1000)) return 2;
  }

  prog_ready(argv[1]);
  prog_wait_usr1();

  /* Packet. */
  struct sockaddr_ll got = {0};
  socklen_t glen = sizeof got;
  CHECK(getsockname(pk, (struct sockaddr*)&got, &glen) == 0 && got.sll_ifindex == (int)lo &&
            ntohs(got.sll_protocol) == ETH_P_TEST,
        "packet socket bound to ifindex %d protocol 0x%x", got.sll_ifindex, ntohs(got.sll_protocol));
  CHECK(geti(pk, SOL_PACKET, PACKET_AUXDATA) == 1, "PACKET_AUXDATA");
  CHECK(geti(pk, SOL_PACKET, PACKET_ORIGDEV) == 1, "PACKET_ORIGDEV");
  CHECK(geti(pkd, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "packet dgram socket type");
  unsigned char frame[64] = {0};
  memset(frame, 0xff, 6);
  frame[12] = ETH_P_TEST >> 8;
  frame[13] = ETH_P_TEST & 0xff;
  memcpy(frame + 14, "minicriu", 8);
  CHECK(send(pk, frame, sizeof frame, 0) == sizeof frame, "packet send: %s", strerror(errno));
  unsigned char rx[128];
  CHECK(readable(pk, 2000) && recv(pk, rx, sizeof rx, 0) >= 22 && memcmp(rx + 14, "minicriu", 8) == 0,
        "the packet socket sees the frame on lo");

  /* Netlink. */
  nllen = sizeof nl;
  CHECK(getsockname(nlr, (struct sockaddr*)&nl, &nllen) == 0 && nl.nl_pid == nlr_port, "route port id %u, want %u",
        nl.nl_pid, nlr_port);
  unsigned groups[4] = {0};
  socklen_t glen2 = sizeof groups;
  CHECK(getsockopt(nlr, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &glen2) == 0 &&
            (groups[(RTNLGRP_NSID - 1) / 32] & (1u << ((RTNLGRP_NSID - 1) % 32))),
        "route socket in group RTNLGRP_NSID");
  CHECK(geti(nlr, SOL_NETLINK, NETLINK_EXT_ACK) == 1, "NETLINK_EXT_ACK");
  struct {
    struct nlmsghdr h;
    struct ifinfomsg i;
  } rq = {{sizeof rq, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {0}};
  struct sockaddr_nl kernel = {0};
  kernel.nl_family = AF_NETLINK;
  CHECK(sendto(nlr, &rq, sizeof rq, 0, (struct sockaddr*)&kernel, sizeof kernel) == sizeof rq, "RTM_GETLINK");
  char nlbuf[16384];
  ssize_t nln = readable(nlr, 2000) ? recv(nlr, nlbuf, sizeof nlbuf, 0) : -1;
  CHECK(nln > 0 && ((struct nlmsghdr*)nlbuf)->nlmsg_type == RTM_NEWLINK, "the route socket answers RTM_GETLINK");
  while (readable(nlr, 100)) recv(nlr, nlbuf, sizeof nlbuf, 0);
  nllen = sizeof nl;
  CHECK(getsockname(nlg, (struct sockaddr*)&nl, &nllen) == 0 && nl.nl_pid == nlg_port, "generic port id %u, want %u",
        nl.nl_pid, nlg_port);

  /* Raw. */
  CHECK(send(raw, "raw!", 4, 0) == 4, "raw send: %s", strerror(errno));
  unsigned char rb[128];
  ssize_t rn = readable(raw, 2000) ? recv(raw, rb, sizeof rb, 0) : -1;
  CHECK(rn == 24 && memcmp(rb + (rb[0] & 15) * 4, "raw!", 4) == 0, "the raw socket receives its packet (%zd)", rn);
  struct icmp_filter gf = {0};
  socklen_t gflen = sizeof gf;
  CHECK(getsockopt(icmp, SOL_RAW, ICMP_FILTER, &gf, &gflen) == 0 && gf.data == ~0u, "ICMP_FILTER %x", gf.data);
  CHECK(geti(raw6, IPPROTO_IPV6, IPV6_CHECKSUM) == 2, "IPV6_CHECKSUM");

  /* Ping. */
  struct sockaddr_in pg = {0};
  socklen_t pglen = sizeof pg;
  CHECK(getsockname(ping, (struct sockaddr*)&pg, &pglen) == 0 && ntohs(pg.sin_port) == 0x4242, "ping id %x",
        ntohs(pg.sin_port));
  struct icmphdr echo = {0};
  echo.type = ICMP_ECHO;
  echo.un.echo.sequence = htons(7);
  echo.checksum = csum(&echo, sizeof echo);
  CHECK(send(ping, &echo, sizeof echo, 0) == sizeof echo, "ping send: %s", strerror(errno));
  struct icmphdr reply = {0};
  CHECK(readable(ping, 2000) && recv(ping, &reply, sizeof reply, 0) == sizeof reply && reply.type == ICMP_ECHOREPLY &&
            ntohs(reply.un.echo.sequence) == 7,
        "an echo reply on the ping socket");
  put_ping_range_back();

  /* UDP-Lite. */
  CHECK(geti(ul, SOL_UDPLITE, UDPLITE_RECV_CSCOV) == 20, "UDPLITE_RECV_CSCOV");
  CHECK(geti(uc, SOL_UDPLITE, UDPLITE_SEND_CSCOV) == 20, "UDPLITE_SEND_CSCOV");
  CHECK(send(uc, "lite", 4, 0) == 4, "UDP-Lite send: %s", strerror(errno));
  char ub[8] = {0};
  CHECK(readable(ul, 2000) && recv(ul, ub, sizeof ub, 0) == 4 && memcmp(ub, "lite", 4) == 0, "UDP-Lite receive");
  return prog_failures ? 1 : 0;
}
