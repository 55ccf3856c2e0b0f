// UDP-Lite sockets (SOCK_DGRAM, IPPROTO_UDPLITE): made again, with their
// checksum coverage (UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV) and the other
// options, bound and connected as they were (net/lone_socket.cc). Queued
// datagrams are refused for now.
#include <netinet/in.h>
#include <sys/socket.h>

#include "net/lone_socket.hpp"

namespace minicriu {

std::unique_ptr<Kind> make_udplite_socket_kind() {
  return make_ip_socket_kind(IpKindSpec{
      "UDP-Lite socket", "udplite",
      [](int family, int type, int protocol) {
        return (family == AF_INET || family == AF_INET6) && type == SOCK_DGRAM && protocol == IPPROTO_UDPLITE;
      },
      [](const img::FileEntry& f) { return f.has_udplite_sk(); },
      [](const img::FileEntry& f) -> const img::IpSocketFile& { return f.udplite_sk(); },
      [](img::FileEntry& f) { return f.mutable_udplite_sk(); },
      "minicriu does not re-queue UDP-Lite datagrams yet"});
}

}  // namespace minicriu
