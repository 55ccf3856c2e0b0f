// Raw IP sockets (AF_INET/AF_INET6 SOCK_RAW): made again with their protocol,
// IP_HDRINCL, ICMP_FILTER / ICMPV6_FILTER, IPV6_CHECKSUM and the other options,
// bound and connected as they were (net/lone_socket.cc). Queued packets
// are refused: a raw socket's queue holds copies of packets the kernel
// received, which cannot be injected again as received.
#include <netinet/in.h>
#include <sys/socket.h>

#include "net/lone_socket.hpp"

namespace minicriu {

std::unique_ptr<Kind> make_raw_socket_kind() {
  return make_ip_socket_kind(IpKindSpec{
      "raw socket", "raw",
      [](int family, int type, int) { return (family == AF_INET || family == AF_INET6) && type == SOCK_RAW; },
      [](const img::FileEntry& f) { return f.has_raw_sk(); },
      [](const img::FileEntry& f) -> const img::IpSocketFile& { return f.raw_sk(); },
      [](img::FileEntry& f) { return f.mutable_raw_sk(); },
      "packets a raw socket received cannot be received again"});
}

}  // namespace minicriu
