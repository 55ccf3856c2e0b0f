#include "net/socket_options.hpp"

#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>

#include "base/unique_fd.hpp"
#include "net/tcp_repair.hpp"

namespace minicriu {

namespace {

// Newer than bookworm's glibc or kernel headers (values from the kernel's
// uapi).
#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif
#ifndef IP_RECVERR_RFC4884
#define IP_RECVERR_RFC4884 26
#endif
#ifndef IPV6_RECVERR_RFC4884
#define IPV6_RECVERR_RFC4884 31
#endif
#ifndef UDP_NO_CHECK6_TX
#define UDP_NO_CHECK6_TX 101
#endif
#ifndef UDP_NO_CHECK6_RX
#define UDP_NO_CHECK6_RX 102
#endif
#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef PACKET_VNET_HDR_SZ
#define PACKET_VNET_HDR_SZ 24
#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif
#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36
#endif
// <linux/udp.h>, <linux/icmp.h>, <linux/icmpv6.h>: not with glibc's headers.
constexpr int kSolUdpLite = 136, kUdpLiteSendCscov = 10, kUdpLiteRecvCscov = 11;
constexpr int kSolRaw = 255, kIcmpFilter = 1, kIcmpv6Filter = 1;

enum Family : unsigned {
  kInet = 1, kInet6 = 2, kUnix = 4, kPacket = 8, kNetlink = 16,
  kAnyFamily = kInet | kInet6 | kUnix | kPacket | kNetlink
};
// kIcmp, kIcmp6: a raw socket of IPPROTO_ICMP / IPPROTO_ICMPV6 (a ping
// socket has the same protocol: the raw socket's filter options fail on it,
// so they are not read).
enum Proto : unsigned {
  kTcp = 1, kUdp = 2, kNoProto = 4, kUdpLite = 8, kIcmp = 16, kIcmp6 = 32,
  kAnyProto = kTcp | kUdp | kNoProto | kUdpLite | kIcmp | kIcmp6
};

struct Opt {
  int level, name;
  const char* text;
  unsigned families, protos;
  // Read on an unconnected or listening TCP socket only: on a connection the
  // kernel answers with what it computed (TCP_MAXSEG, TCP_WINDOW_CLAMP).
  bool unconnected_only = false;
  socklen_t size = sizeof(int);
};

constexpr unsigned kIp = kInet, kIpAll = kInet | kInet6;

// Options an application sets and the kernel reports back as set. Left out:
// the ones the socket kinds carry by name (SO_REUSEADDR, SO_REUSEPORT,
// SO_KEEPALIVE, SO_SNDBUF/RCVBUF, SO_BROADCAST, SO_PEEK_OFF, SO_MARK,
// SO_LINGER, IP_TOS, IPV6_TCLASS, IPV6_V6ONLY, SO_PASSCRED, TCP_NODELAY,
// TCP_CORK, TCP_KEEP*, TCP_USER_TIMEOUT), and those the kernel changes by
// itself as traffic flows (SO_INCOMING_CPU, TCP_QUICKACK).
const Opt kOptions[] = {
    {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_RCVTIMEO_OLD, "SO_RCVTIMEO", kAnyFamily, kAnyProto, false, 16},
    {SOL_SOCKET, SO_SNDTIMEO_OLD, "SO_SNDTIMEO", kAnyFamily, kAnyProto, false, 16},
    {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE", kIpAll, kTcp},
    {SOL_SOCKET, SO_DONTROUTE, "SO_DONTROUTE", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_TIMESTAMP_OLD, "SO_TIMESTAMP", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_TIMESTAMPNS_OLD, "SO_TIMESTAMPNS", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_TIMESTAMPING_OLD, "SO_TIMESTAMPING", kAnyFamily, kAnyProto, false, 8},
    {SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_PASSSEC, "SO_PASSSEC", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_PASSPIDFD, "SO_PASSPIDFD", kUnix, kAnyProto},
    {SOL_SOCKET, SO_PASSRIGHTS, "SO_PASSRIGHTS", kUnix, kAnyProto},
    {SOL_SOCKET, SO_RXQ_OVFL, "SO_RXQ_OVFL", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_WIFI_STATUS, "SO_WIFI_STATUS", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_NOFCS, "SO_NOFCS", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_BUSY_POLL, "SO_BUSY_POLL", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_PREFER_BUSY_POLL, "SO_PREFER_BUSY_POLL", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_BUSY_POLL_BUDGET, "SO_BUSY_POLL_BUDGET", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_ZEROCOPY, "SO_ZEROCOPY", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_TXREHASH, "SO_TXREHASH", kIpAll, kAnyProto},
    {SOL_SOCKET, SO_RCVMARK, "SO_RCVMARK", kAnyFamily, kAnyProto},
    {SOL_SOCKET, SO_MAX_PACING_RATE, "SO_MAX_PACING_RATE", kIpAll, kAnyProto, false, 8},
    {SOL_SOCKET, SO_BINDTODEVICE, "SO_BINDTODEVICE", kIpAll, kAnyProto, false, 16},
    {IPPROTO_IP, IP_TTL, "IP_TTL", kIp, kAnyProto},
    {IPPROTO_IP, IP_MINTTL, "IP_MINTTL", kIp, kAnyProto},
    {IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND", kIp, kAnyProto},
    {IPPROTO_IP, IP_TRANSPARENT, "IP_TRANSPARENT", kIp, kAnyProto},
    {IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", kIp, kAnyProto},
    {IPPROTO_IP, IP_LOCAL_PORT_RANGE, "IP_LOCAL_PORT_RANGE", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVERR, "IP_RECVERR", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVERR_RFC4884, "IP_RECVERR_RFC4884", kIp, kAnyProto},
    {IPPROTO_IP, IP_PKTINFO, "IP_PKTINFO", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVTOS, "IP_RECVTOS", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVTTL, "IP_RECVTTL", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVOPTS, "IP_RECVOPTS", kIp, kAnyProto},
    {IPPROTO_IP, IP_RETOPTS, "IP_RETOPTS", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR", kIp, kAnyProto},
    {IPPROTO_IP, IP_RECVFRAGSIZE, "IP_RECVFRAGSIZE", kIp, kAnyProto},
    {IPPROTO_IP, IP_PASSSEC, "IP_PASSSEC", kIp, kAnyProto},
    {IPPROTO_IP, IP_MTU_DISCOVER, "IP_MTU_DISCOVER", kIp, kAnyProto},
    {IPPROTO_IP, IP_NODEFRAG, "IP_NODEFRAG", kIp, kAnyProto},
    {IPPROTO_IP, IP_CHECKSUM, "IP_CHECKSUM", kIp, kAnyProto},
    {IPPROTO_IP, IP_MULTICAST_TTL, "IP_MULTICAST_TTL", kIp, kUdp},
    {IPPROTO_IP, IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", kIp, kUdp},
    {IPPROTO_IP, IP_MULTICAST_ALL, "IP_MULTICAST_ALL", kIp, kUdp},
    {IPPROTO_IP, IP_OPTIONS, "IP_OPTIONS", kIp, kAnyProto, false, 40},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVERR, "IPV6_RECVERR", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVERR_RFC4884, "IPV6_RECVERR_RFC4884", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVRTHDR, "IPV6_RECVRTHDR", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVHOPOPTS, "IPV6_RECVHOPOPTS", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVDSTOPTS, "IPV6_RECVDSTOPTS", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVTCLASS, "IPV6_RECVTCLASS", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVPATHMTU, "IPV6_RECVPATHMTU", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_RECVFRAGSIZE, "IPV6_RECVFRAGSIZE", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_DONTFRAG, "IPV6_DONTFRAG", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, "IPV6_AUTOFLOWLABEL", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_ADDR_PREFERENCES, "IPV6_ADDR_PREFERENCES", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", kInet6, kUdp},
    {IPPROTO_IPV6, IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", kInet6, kUdp},
    {IPPROTO_IPV6, IPV6_MULTICAST_ALL, "IPV6_MULTICAST_ALL", kInet6, kUdp},
    {SOL_TCP, TCP_CONGESTION, "TCP_CONGESTION", kIpAll, kTcp, false, 16},
    {SOL_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", kIpAll, kTcp},
    {SOL_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", kIpAll, kTcp},
    {SOL_TCP, TCP_FASTOPEN, "TCP_FASTOPEN", kIpAll, kTcp},
    {SOL_TCP, TCP_FASTOPEN_CONNECT, "TCP_FASTOPEN_CONNECT", kIpAll, kTcp},
    {SOL_TCP, TCP_FASTOPEN_NO_COOKIE, "TCP_FASTOPEN_NO_COOKIE", kIpAll, kTcp},
    {SOL_TCP, TCP_SYNCNT, "TCP_SYNCNT", kIpAll, kTcp},
    {SOL_TCP, TCP_LINGER2, "TCP_LINGER2", kIpAll, kTcp},
    {SOL_TCP, TCP_THIN_LINEAR_TIMEOUTS, "TCP_THIN_LINEAR_TIMEOUTS", kIpAll, kTcp},
    {SOL_TCP, TCP_TX_DELAY, "TCP_TX_DELAY", kIpAll, kTcp},
    {SOL_TCP, TCP_INQ, "TCP_INQ", kIpAll, kTcp},
    {SOL_TCP, TCP_SAVE_SYN, "TCP_SAVE_SYN", kIpAll, kTcp},
    {SOL_TCP, TCP_MAXSEG, "TCP_MAXSEG", kIpAll, kTcp, true},
    {SOL_TCP, TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", kIpAll, kTcp, true},
    {SOL_UDP, UDP_CORK, "UDP_CORK", kIpAll, kUdp},
    {SOL_UDP, UDP_SEGMENT, "UDP_SEGMENT", kIpAll, kUdp},
    {SOL_UDP, UDP_GRO, "UDP_GRO", kIpAll, kUdp},
    {SOL_UDP, UDP_NO_CHECK6_TX, "UDP_NO_CHECK6_TX", kInet6, kUdp},
    {SOL_UDP, UDP_NO_CHECK6_RX, "UDP_NO_CHECK6_RX", kInet6, kUdp},
    {IPPROTO_IP, IP_HDRINCL, "IP_HDRINCL", kIp, kAnyProto},
    {IPPROTO_IPV6, IPV6_HDRINCL, "IPV6_HDRINCL", kInet6, kAnyProto},
    {IPPROTO_IPV6, IPV6_CHECKSUM, "IPV6_CHECKSUM", kInet6, kNoProto},
    {kSolRaw, kIcmpFilter, "ICMP_FILTER", kIp, kIcmp},
    {IPPROTO_ICMPV6, kIcmpv6Filter, "ICMPV6_FILTER", kInet6, kIcmp6, false, 32},
    {kSolUdpLite, kUdpLiteSendCscov, "UDPLITE_SEND_CSCOV", kIpAll, kUdpLite},
    {kSolUdpLite, kUdpLiteRecvCscov, "UDPLITE_RECV_CSCOV", kIpAll, kUdpLite},
    // Before PACKET_RESERVE and the rest: PACKET_VERSION comes first.
    {SOL_PACKET, PACKET_VERSION, "PACKET_VERSION", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_RESERVE, "PACKET_RESERVE", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_AUXDATA, "PACKET_AUXDATA", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_ORIGDEV, "PACKET_ORIGDEV", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_LOSS, "PACKET_LOSS", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_VNET_HDR, "PACKET_VNET_HDR", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_VNET_HDR_SZ, "PACKET_VNET_HDR_SZ", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_TIMESTAMP, "PACKET_TIMESTAMP", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS", kPacket, kAnyProto},
    {SOL_PACKET, PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING", kPacket, kAnyProto},
    {SOL_NETLINK, NETLINK_PKTINFO, "NETLINK_PKTINFO", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_BROADCAST_ERROR, "NETLINK_BROADCAST_ERROR", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_NO_ENOBUFS, "NETLINK_NO_ENOBUFS", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, "NETLINK_LISTEN_ALL_NSID", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_CAP_ACK, "NETLINK_CAP_ACK", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_EXT_ACK, "NETLINK_EXT_ACK", kNetlink, kAnyProto},
    {SOL_NETLINK, NETLINK_GET_STRICT_CHK, "NETLINK_GET_STRICT_CHK", kNetlink, kAnyProto},
    // Last: it forbids changing the filter, which is attached before it.
    {SOL_SOCKET, SO_LOCK_FILTER, "SO_LOCK_FILTER", kAnyFamily, kAnyProto},
};


unsigned family_bit(int family) {
  switch (family) {
    case AF_INET: return kInet;
    case AF_INET6: return kInet6;
    case AF_UNIX: return kUnix;
    case AF_PACKET: return kPacket;
    case AF_NETLINK: return kNetlink;
    default: return 0u;
  }
}
unsigned proto_bit(int family, int protocol) {
  if (family != AF_INET && family != AF_INET6) return kNoProto;
  switch (protocol) {
    case IPPROTO_TCP: return kTcp;
    case IPPROTO_UDP: return kUdp;
    case IPPROTO_UDPLITE: return kUdpLite;
    case IPPROTO_ICMP: return kIcmp;
    case IPPROTO_ICMPV6: return kIcmp6;
    default: return kNoProto;
  }
}

const Opt* find_opt(int level, int name) {
  for (const Opt& o : kOptions)
    if (o.level == level && o.name == name) return &o;
  return nullptr;
}

// The option's value; empty when this socket does not have it.
std::string get_opt(int fd, const Opt& o) {
  std::string v(o.size, '\0');
  socklen_t len = o.size;
  if (::getsockopt(fd, o.level, o.name, v.data(), &len) != 0) return {};
  v.resize(len);
  return v;
}

// A filter of classic BPF: its instructions, or empty for none; an eBPF
// program (SO_ATTACH_BPF) has no instructions to give back (EACCES).
Result<std::string> get_filter(int fd, const std::string& what) {
  // SO_GET_FILTER counts in instructions, not bytes (sk_get_filter).
  socklen_t count = 0;
  if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &count) != 0) {
    if (errno == EACCES)
      return failf("{} has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back to be attached "
                   "again; detach it (SO_DETACH_BPF) before the dump", what);
    return failf_errno("{}: SO_GET_FILTER", what);
  }
  if (count == 0) return std::string();
  std::string prog(count * sizeof(sock_filter), '\0');
  if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, prog.data(), &count) != 0)
    return failf_errno("{}: SO_GET_FILTER of {} instructions", what, prog.size() / sizeof(sock_filter));
  prog.resize(count * sizeof(sock_filter));
  return prog;
}

std::string value_text(const img::SocketOption& o) {
  if (o.value().size() == sizeof(int)) {
    int v;
    std::memcpy(&v, o.value().data(), sizeof v);
    return std::to_string(v);
  }
  const Opt* opt = find_opt(o.level(), o.name());
  bool text = opt && ((opt->level == SOL_TCP && opt->name == TCP_CONGESTION) ||
                      (opt->level == SOL_SOCKET && opt->name == SO_BINDTODEVICE));
  if (text) return std::string(o.value().c_str());
  bool timeout = opt && opt->level == SOL_SOCKET && (opt->name == SO_RCVTIMEO_OLD || opt->name == SO_SNDTIMEO_OLD);
  if (timeout && o.value().size() == sizeof(timeval)) {
    timeval tv;
    std::memcpy(&tv, o.value().data(), sizeof tv);
    return fmt::format("{}.{:06}s", tv.tv_sec, tv.tv_usec);
  }
  std::string hex;
  for (unsigned char c : o.value()) hex += fmt::format("{:02x}", c);
  return hex;
}

}  // namespace

Status read_socket_options(int fd, int family, int type, int protocol, int state, const std::string& what,
                           img::SocketOptions& out) {
  unsigned fam = family_bit(family), proto = proto_bit(family, protocol);
  bool tcp = proto == kTcp;
  if (tcp) {
    char ulp[16] = {};
    socklen_t len = sizeof ulp;
    // Kernel TLS keeps its keys and record state where nothing reads them.
    if (::getsockopt(fd, SOL_TCP, TCP_ULP, ulp, &len) == 0 && ulp[0])
      return failf("{} runs the upper-layer protocol {:?} (TCP_ULP, kernel TLS), whose state cannot be "
                   "read back; minicriu cannot checkpoint it", what, std::string(ulp));
  }
  // What a socket of the same kind starts with, here.
  UniqueFd fresh(::socket(family, type | SOCK_CLOEXEC, family == AF_UNIX || family == AF_PACKET ? 0 : protocol));
  bool unconnected = !tcp || state == kTcpClose || state == kTcpListen;
  for (const Opt& o : kOptions) {
    if (!(o.families & fam) || !(o.protos & proto)) continue;
    if (o.unconnected_only && !unconnected) continue;
    std::string v = get_opt(fd, o);
    if (v.empty()) continue;
    if (fresh && get_opt(fresh.get(), o) == v) continue;
    img::SocketOption* s = out.add_options();
    s->set_level(o.level);
    s->set_name(o.name);
    s->set_value(std::move(v));
  }
  ASSIGN_OR_RETURN(std::string filter, get_filter(fd, what));
  out.set_filter(std::move(filter));
  return {};
}

Status set_socket_options(int fd, const img::SocketOptions& opts, const std::string& what) {
  for (auto& o : opts.options()) {
    const Opt* opt = find_opt(o.level(), o.name());
    if (!opt) return failf("{}: socket option {}:{} is not one this version knows", what, o.level(), o.name());
    if (opt->level == SOL_SOCKET && opt->name == SO_LOCK_FILTER) continue;  // attach_socket_filter()
    if (::setsockopt(fd, o.level(), o.name(), o.value().data(), static_cast<socklen_t>(o.value().size())) != 0)
      return failf_errno("{}: {}={}", what, opt->text, value_text(o));
  }
  return {};
}

Status attach_socket_filter(int fd, const img::SocketOptions& opts, const std::string& what) {
  if (!opts.filter().empty()) {
    if (opts.filter().size() % sizeof(sock_filter) || opts.filter().size() / sizeof(sock_filter) > BPF_MAXINSNS)
      return failf("{}: a socket filter of {} bytes is not a classic BPF program", what, opts.filter().size());
    sock_fprog prog{static_cast<unsigned short>(opts.filter().size() / sizeof(sock_filter)),
                    reinterpret_cast<sock_filter*>(const_cast<char*>(opts.filter().data()))};
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
      return failf_errno("{}: SO_ATTACH_FILTER of {} instructions", what, prog.len);
  }
  for (auto& o : opts.options())
    if (o.level() == SOL_SOCKET && o.name() == SO_LOCK_FILTER &&
        ::setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, o.value().data(), static_cast<socklen_t>(o.value().size())) != 0)
      return failf_errno("{}: SO_LOCK_FILTER", what);
  return {};
}

std::string describe_socket_options(const img::SocketOptions& opts) {
  std::string out;
  for (auto& o : opts.options()) {
    const Opt* opt = find_opt(o.level(), o.name());
    out += fmt::format("{}{}={}", out.empty() ? "" : ", ",
                       opt ? opt->text : fmt::format("{}:{}", o.level(), o.name()), value_text(o));
  }
  if (!opts.filter().empty())
    out += fmt::format("{}BPF filter ({} instructions)", out.empty() ? "" : ", ",
                       opts.filter().size() / sizeof(sock_filter));
  return out;
}

}  // namespace minicriu
