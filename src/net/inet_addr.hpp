// Addresses of inet sockets as the dump and the restore see them, and what
// the kernel's inet sock_diag says of the sockets of our network namespace.
// An IPv4 address is the same endpoint whether an AF_INET socket or an
// AF_INET6 socket (v4-mapped, ::ffff:a.b.c.d) holds it: connections are
// matched on normalized endpoints.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace minicriu {

struct InetEndpoint {
  int family = AF_INET;              // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};    // AF_INET: the first 4 bytes
  uint16_t port = 0;                 // host byte order

  // As bytes of the image: 4 for AF_INET, 16 for AF_INET6.
  std::string addr_bytes() const;
  // A v4-mapped AF_INET6 address as AF_INET; anything else unchanged.
  InetEndpoint normalized() const;
  bool is_any() const;               // 0.0.0.0 or ::
  auto operator<=>(const InetEndpoint&) const = default;
};

// "127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000".
std::string format_endpoint(const InetEndpoint& e);
// From the image's bytes (4 or 16) and port; an error if the size is wrong.
[[nodiscard]] Result<InetEndpoint> endpoint_from_bytes(const std::string& bytes, uint32_t port);
// From a sockaddr_in / sockaddr_in6.
InetEndpoint endpoint_from_sockaddr(const sockaddr_storage& ss);
// A sockaddr for bind/connect on a socket of `family` (an AF_INET endpoint
// on an AF_INET6 socket becomes v4-mapped).
socklen_t endpoint_to_sockaddr(const InetEndpoint& e, int family, sockaddr_storage& ss);

// A connection by its two normalized endpoints, seen from one side.
struct Connection {
  InetEndpoint local;
  InetEndpoint remote;
  Connection reversed() const { return {remote, local}; }
  auto operator<=>(const Connection&) const = default;
};
Connection make_connection(const InetEndpoint& local, const InetEndpoint& remote);
// "127.0.0.1:5000 -> 127.0.0.1:41000"
std::string format_connection(const Connection& c);

// "LISTEN", "ESTABLISHED", "CLOSE_WAIT"... (include/net/tcp_states.h).
std::string tcp_state_name(int state);

// One socket as inet sock_diag reports it.
struct InetDiag {
  int family = 0;
  int protocol = 0;
  int state = 0;
  InetEndpoint local;
  InetEndpoint remote;
  uint64_t ino = 0;         // 0: no file yet (a connection waiting to be accepted)
  uint32_t rqueue = 0;      // a listener: connections waiting in its accept queue
  uint32_t wqueue = 0;      // a listener: its backlog
  uint8_t shutdown = 0;     // sk_shutdown: 1 receive, 2 send
};

// Every socket of this family and protocol in our network namespace.
[[nodiscard]] Result<std::vector<InetDiag>> inet_diag_dump(int family, int protocol);
// Both families.
[[nodiscard]] Result<std::vector<InetDiag>> inet_diag_dump_all(int protocol);
// Destroys one TCP socket found by inet_diag_dump (SOCK_DESTROY: tcp_abort;
// for a TIME_WAIT one, its early end). Needs CAP_NET_ADMIN.
[[nodiscard]] Status inet_diag_destroy(const InetDiag& d);

}  // namespace minicriu
