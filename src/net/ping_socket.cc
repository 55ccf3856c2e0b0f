// ICMP "ping" sockets (SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6, allowed by
// net.ipv4.ping_group_range): made again, bound to the same address and echo
// id, connected as they were, with their options (net/lone_socket.cc). Queued
// echo replies are refused: they cannot be received again.
#include <netinet/in.h>
#include <sys/socket.h>

#include "net/lone_socket.hpp"

namespace minicriu {

std::unique_ptr<Kind> make_ping_socket_kind() {
  return make_ip_socket_kind(IpKindSpec{
      "ping socket", "ping",
      [](int family, int type, int protocol) {
        return type == SOCK_DGRAM && ((family == AF_INET && protocol == IPPROTO_ICMP) ||
                                      (family == AF_INET6 && protocol == IPPROTO_ICMPV6));
      },
      [](const img::FileEntry& f) { return f.has_ping_sk(); },
      [](const img::FileEntry& f) -> const img::IpSocketFile& { return f.ping_sk(); },
      [](img::FileEntry& f) { return f.mutable_ping_sk(); },
      "echo replies the kernel received cannot be received again"});
}

}  // namespace minicriu
