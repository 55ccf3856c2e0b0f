// TCP_REPAIR (Linux 3.5+; TCP_REPAIR_WINDOW 4.8+): reading an established
// connection without touching it, and making it again without a handshake.
// A socket in repair mode sends nothing of its own: its sends go to a queue
// we choose, connect() sends no SYN, and close() sends no FIN or RST.
#pragma once

#include <string>

#include "core/error.hpp"
#include "minicriu.pb.h"
#include "net/inet_addr.hpp"

namespace minicriu {

// TCP_REPAIR on; needs CAP_NET_ADMIN, and not on a listener.
[[nodiscard]] Status tcp_repair_on(int fd, const std::string& what);
// TCP_REPAIR off: the kernel sends a window probe, and the socket is itself
// again. Turning repair off clears SO_REUSEADDR (sk_reuse), so it is set
// again here when `reuseaddr`.
[[nodiscard]] Status tcp_repair_off(int fd, bool reuseaddr, const std::string& what);

// Everything TCP_REPAIR tells of the established connection on fd (already
// in repair mode): sequence numbers, both queues read without consuming them,
// the options negotiated at the handshake, the window, the timestamp.
[[nodiscard]] Status dump_tcp_connection(int fd, const std::string& what, img::TcpConnection& out);

// The receive queue of a socket in repair mode, read without consuming it.
[[nodiscard]] Result<std::string> peek_tcp_recv_queue(int fd, const std::string& what);

// Makes the connection again on fd: a new socket in repair mode, bound to its
// local address. Connects to remote (no SYN), sets the options, the window,
// the timestamp, and fills both queues, but for the send queue's unsent bytes:
// resume_tcp_connection sends those, once every socket of the tree exists.
[[nodiscard]] Status restore_tcp_connection(int fd, int family, const InetEndpoint& remote,
                                            const img::TcpConnection& c, const std::string& what);
// Repair off, then the bytes that had never been sent are sent.
[[nodiscard]] Status resume_tcp_connection(int fd, bool reuseaddr, const img::TcpConnection& c,
                                           const std::string& what);

// Sends all of data on a connected socket, waiting at most timeout_ms for
// room (the restoring process must never hang on a peer that does not read).
[[nodiscard]] Status send_all(int fd, const std::string& data, int timeout_ms, const std::string& what);

}  // namespace minicriu
