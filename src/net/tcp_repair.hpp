// TCP_REPAIR (Linux 3.5+; TCP_REPAIR_WINDOW 4.8+): reading an established
// connection without touching it, and making it again without a handshake.
// A socket in repair mode sends nothing of its own: its sends go to a queue
// we choose, connect() sends no SYN, and close() sends no FIN or RST.
#pragma once

#include <string>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "net/inet_addr.hpp"

namespace minicriu {

// The TCP states of include/net/tcp_states.h that minicriu tells apart (UDP
// sockets borrow the first two).
enum TcpState : int {
  kTcpEstablished = 1,
  kTcpSynSent = 2,
  kTcpFinWait1 = 4,
  kTcpFinWait2 = 5,
  kTcpClose = 7,
  kTcpCloseWait = 8,
  kTcpLastAck = 9,
  kTcpListen = 10,
  kTcpClosing = 11,
};

// States a connection may be dumped in (include/net/tcp_states.h): it is
// made again as ESTABLISHED, and the FINs are sent again at the resume.
// ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING.
bool tcp_connected_state(int state);
// This end has sent its FIN (it counts in the send sequence).
bool tcp_fin_sent(int state);
// This end has received the peer's FIN (it counts in the receive sequence).
bool tcp_fin_received(int state);

// How one connection comes back, from its image.
struct TcpRestorePlan {
  int state = 1;
  // Its FIN received will be sent again by its peer, restored in the same
  // tree: the receive sequence stops before it, and the FIN is taken again
  // for real. Else (peer outside) the FIN stays counted and the end of the
  // stream is shown with shutdown(SHUT_RD).
  bool peer_resends_fin = false;
  uint32_t shutdown = 0;  // sk_shutdown at the dump: 1 receive, 2 send
};

// TCP_REPAIR on; needs CAP_NET_ADMIN, and not on a listener.
[[nodiscard]] Status tcp_repair_on(int fd, const std::string& what);
// TCP_REPAIR off: the kernel sends a window probe, and the socket is itself
// again. Turning repair off clears SO_REUSEADDR (sk_reuse), so it is set
// again here when `reuseaddr`.
[[nodiscard]] Status tcp_repair_off(int fd, bool reuseaddr, const std::string& what);

// Everything TCP_REPAIR tells of the established connection on fd (already
// in repair mode): sequence numbers, both queues read without consuming them,
// the options negotiated at the handshake, the window, the timestamp.
[[nodiscard]] Status dump_tcp_connection(int fd, int state, const std::string& what, img::TcpConnection& out);

// The receive queue of a socket in repair mode, read without consuming it,
// and the sequence number of the next byte it expects.
struct TcpReceived {
  uint32_t next_seq = 0;
  std::string data;
};
[[nodiscard]] Result<TcpReceived> peek_tcp_recv_queue(int fd, const std::string& what);

// Raises SO_SNDBUF or SO_RCVBUF (opt, with its *FORCE twin) so that a queue
// of `bytes` fits: one that had grown by autotuning is given room again.
[[nodiscard]] Status make_room(int fd, int opt, int force, size_t bytes, const char* name,
                               const std::string& what);

// Drops from the sender's send queue what its receiver already received
// (everything before receiver_next_seq): sent again over a new connection,
// those bytes would arrive twice.
void drop_received_from_send_queue(img::TcpConnection& sender, uint32_t receiver_next_seq);

// Makes the connection again on fd: a new socket in repair mode, bound to its
// local address. Connects to remote (no SYN), sets the options, the window,
// the timestamp, and fills both queues, but for the send queue's unsent bytes:
// resume_tcp_connection sends those, once every socket of the tree exists.
[[nodiscard]] Status restore_tcp_connection(int fd, int family, const InetEndpoint& remote,
                                            const img::TcpConnection& c, const TcpRestorePlan& plan,
                                            const std::string& what);
// Repair off, then the bytes that had never been sent are sent, then the FIN
// this end had sent (shutdown(SHUT_WR)), and SHUT_RD where the peer's FIN is
// not taken again.
[[nodiscard]] Status resume_tcp_connection(int fd, bool reuseaddr, const img::TcpConnection& c,
                                           const TcpRestorePlan& plan, const std::string& what);

// Sends all of data on a connected socket, waiting at most timeout_ms for
// room (the restoring process must never hang on a peer that does not read).
[[nodiscard]] Status send_all(int fd, const std::string& data, int timeout_ms, const std::string& what);

}  // namespace minicriu
