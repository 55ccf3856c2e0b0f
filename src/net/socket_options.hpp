// Socket options an application may set on any socket of the tree, beyond the
// few that the socket kinds carry by name (addresses' reuse, buffers, TCP
// keepalive...): each option of a table is read on the socket and on a fresh
// socket of the same family, type and protocol; those that differ are carried
// as raw values and set again at restore. A classic BPF filter (SO_GET_FILTER)
// is carried whole. What cannot be read back (an eBPF filter, kernel TLS) is
// refused in one line.
#pragma once

#include <google/protobuf/repeated_field.h>

#include <string>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// The options of fd (a socket of this family, type and protocol, in the TCP
// state `state`, 0 for other protocols) that differ from a fresh socket's,
// and its classic BPF filter.
[[nodiscard]] Status read_socket_options(int fd, int family, int type, int protocol, int state,
                                         const std::string& what, img::SocketOptions& out);

// Sets the options again on a new socket: before bind() and connect() (some
// must be, SO_BINDTODEVICE, IP_FREEBIND).
[[nodiscard]] Status set_socket_options(int fd, const img::SocketOptions& opts, const std::string& what);
// The filter, then SO_LOCK_FILTER: once the data queued at the dump is back
// (it passed the filter when it first came).
[[nodiscard]] Status attach_socket_filter(int fd, const img::SocketOptions& opts, const std::string& what);

// "SO_PRIORITY=6, IP_TTL=33, BPF filter (4 instructions)", for `show`.
std::string describe_socket_options(const img::SocketOptions& opts);

}  // namespace minicriu
