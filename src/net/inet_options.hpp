// Socket options of TCP and UDP sockets that an application may have set:
// read with getsockopt on the dumper's copy, set again on the new socket.
#pragma once

#include <netinet/in.h>

#include <string>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

inline bool is_tcp(const img::InetSocketFile& sk) { return sk.protocol() == IPPROTO_TCP; }

// sk's family and protocol say which options apply.
void read_inet_options(int fd, const img::InetSocketFile& sk, img::InetSocketOptions& o);

// Sets sk.opts() on a new socket, before bind(): some must be (SO_REUSEADDR,
// SO_REUSEPORT, IPV6_V6ONLY). A socket in TCP repair mode (`repair`) gets its
// SO_REUSEADDR when repair goes off, which clears it.
[[nodiscard]] Status set_inet_options(int fd, const img::InetSocketFile& sk, bool repair, const std::string& what);

}  // namespace minicriu
