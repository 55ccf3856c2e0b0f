// The receive queue of a UDP socket: read without consuming it (SO_PEEK_OFF
// moves past each datagram peeked, Linux 4.11+ for UDP), and sent again at
// restore from each datagram's sender address.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "net/inet_addr.hpp"

namespace minicriu {

// Every datagram queued on fd, oldest first, with its sender; the socket's
// SO_PEEK_OFF is put back as it was. An empty datagram cannot be peeked past:
// refused.
[[nodiscard]] Result<std::vector<img::UdpDatagram>> peek_udp_queue(int fd, const std::string& what);

// A socket of the restored tree that may send from `from` (bound there), or -1.
using UdpSenderLookup = std::function<int(const InetEndpoint& from)>;

// Sends sk's queue again to the socket `to_fd` (sk restored, bound, maybe
// connected), each datagram from its sender's address: through a socket of
// the tree bound there, else through a temporary socket bound to it. Then
// checks that every datagram is queued.
[[nodiscard]] Status refill_udp_queue(int to_fd, const img::InetSocketFile& sk, const UdpSenderLookup& senders,
                                      const std::string& what);

}  // namespace minicriu
