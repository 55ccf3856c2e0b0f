#include "net/inet_options.hpp"
#include "net/sockopt.hpp"
#include "net/tcp_repair.hpp"

#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace minicriu {

void read_inet_options(int fd, const img::InetSocketFile& sk, img::InetSocketOptions& o) {
  o.set_reuseaddr(sock_int(fd, SOL_SOCKET, SO_REUSEADDR, 0) != 0);
  o.set_reuseport(sock_int(fd, SOL_SOCKET, SO_REUSEPORT, 0) != 0);
  if (sk.family() == AF_INET6) o.set_v6only(sock_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) != 0);
  o.set_keepalive(sock_int(fd, SOL_SOCKET, SO_KEEPALIVE, 0) != 0);
  o.set_sndbuf(static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, SO_SNDBUF, 0)));
  o.set_rcvbuf(static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, SO_RCVBUF, 0)));
  o.set_broadcast(sock_int(fd, SOL_SOCKET, SO_BROADCAST, 0) != 0);
  o.set_peek_off(sock_int(fd, SOL_SOCKET, SO_PEEK_OFF, -1));
  o.set_mark(static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, SO_MARK, 0)));
  o.set_tos(static_cast<uint32_t>(sk.family() == AF_INET6 ? sock_int(fd, IPPROTO_IPV6, IPV6_TCLASS, 0)
                                                           : sock_int(fd, IPPROTO_IP, IP_TOS, 0)));
  linger l{};
  socklen_t len = sizeof l;
  o.set_linger(::getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &len) == 0 && l.l_onoff ? l.l_linger : -1);
  if (is_tcp(sk)) {
    o.set_nodelay(sock_int(fd, SOL_TCP, TCP_NODELAY, 0) != 0);
    o.set_cork(sock_int(fd, SOL_TCP, TCP_CORK, 0) != 0);
    o.set_keepidle(static_cast<uint32_t>(sock_int(fd, SOL_TCP, TCP_KEEPIDLE, 0)));
    o.set_keepintvl(static_cast<uint32_t>(sock_int(fd, SOL_TCP, TCP_KEEPINTVL, 0)));
    o.set_keepcnt(static_cast<uint32_t>(sock_int(fd, SOL_TCP, TCP_KEEPCNT, 0)));
    o.set_user_timeout(static_cast<uint32_t>(sock_int(fd, SOL_TCP, TCP_USER_TIMEOUT, 0)));
  }
}

namespace {

Status set_opt(int fd, int level, int opt, int value, const char* name, const std::string& what) {
  if (::setsockopt(fd, level, opt, &value, sizeof value) != 0) return failf_errno("{}: {}", what, name);
  return {};
}

}  // namespace

Status set_inet_options(int fd, const img::InetSocketFile& sk, bool repair, const std::string& what) {
  const img::InetSocketOptions& o = sk.opts();
  if (o.reuseaddr() && !repair) TRY(set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", what));
  if (o.reuseport()) TRY(set_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT", what));
  // Only where it differs: some sockets refuse it (a raw IPv6 socket).
  if (sk.family() == AF_INET6 && sock_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, -1) != static_cast<int>(o.v6only()))
    TRY(set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, o.v6only(), "IPV6_V6ONLY", what));
  if (o.keepalive()) TRY(set_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE", what));
  if (o.broadcast()) TRY(set_opt(fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST", what));
  if (o.peek_off() >= 0) TRY(set_opt(fd, SOL_SOCKET, SO_PEEK_OFF, o.peek_off(), "SO_PEEK_OFF", what));
  if (o.mark()) TRY(set_opt(fd, SOL_SOCKET, SO_MARK, static_cast<int>(o.mark()), "SO_MARK", what));
  if (o.tos()) {
    if (sk.family() == AF_INET6) TRY(set_opt(fd, IPPROTO_IPV6, IPV6_TCLASS, static_cast<int>(o.tos()), "IPV6_TCLASS", what));
    else TRY(set_opt(fd, IPPROTO_IP, IP_TOS, static_cast<int>(o.tos()), "IP_TOS", what));
  }
  if (o.linger() >= 0) {
    linger l{1, o.linger()};
    if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0) return failf_errno("{}: SO_LINGER", what);
  }
  // Buffers: getsockopt answers twice what was set. An established TCP
  // socket's may have grown by autotuning, which a set size would switch
  // off: only a size below the default (the application's own) is set.
  struct Buf {
    uint32_t want;
    int opt, force;
    const char* name;
  };
  for (const Buf& b : {Buf{o.sndbuf(), SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF"},
                       Buf{o.rcvbuf(), SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF"}}) {
    uint32_t have = static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, b.opt, 0));
    if (b.want == 0 || b.want == have) continue;
    if (is_tcp(sk) && sk.state() == kTcpEstablished && b.want > have) continue;
    int half = static_cast<int>(b.want / 2);
    if (::setsockopt(fd, SOL_SOCKET, b.force, &half, sizeof half) != 0 &&
        ::setsockopt(fd, SOL_SOCKET, b.opt, &half, sizeof half) != 0)
      return failf_errno("{}: {} of {}", what, b.name, b.want);
  }
  if (is_tcp(sk)) {
    if (o.nodelay()) TRY(set_opt(fd, SOL_TCP, TCP_NODELAY, 1, "TCP_NODELAY", what));
    if (o.cork()) TRY(set_opt(fd, SOL_TCP, TCP_CORK, 1, "TCP_CORK", what));
    if (o.keepidle()) TRY(set_opt(fd, SOL_TCP, TCP_KEEPIDLE, static_cast<int>(o.keepidle()), "TCP_KEEPIDLE", what));
    if (o.keepintvl())
      TRY(set_opt(fd, SOL_TCP, TCP_KEEPINTVL, static_cast<int>(o.keepintvl()), "TCP_KEEPINTVL", what));
    if (o.keepcnt()) TRY(set_opt(fd, SOL_TCP, TCP_KEEPCNT, static_cast<int>(o.keepcnt()), "TCP_KEEPCNT", what));
    if (o.user_timeout())
      TRY(set_opt(fd, SOL_TCP, TCP_USER_TIMEOUT, static_cast<int>(o.user_timeout()), "TCP_USER_TIMEOUT", what));
  }
  return {};
}

}  // namespace minicriu
