// AF_UNIX sockets with names: bound to a path or to an abstract name,
// listening (with their connections not yet accepted), accepted from a
// listener of the tree, unconnected, and datagram sockets connected to a named
// one. The pairs of net/unix_socket.cc stay socketpairs; everything that needs
// a name, a listener or an unconnected socket is restored here.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <map>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "minicriu.pb.h"

namespace minicriu {

struct UnixDiag;

// The kernel's sk_state values that unix sockets use.
constexpr int kUnixConnected = 1;   // TCP_ESTABLISHED
constexpr int kUnixUnconnected = 7; // TCP_CLOSE
constexpr int kUnixListening = 10;  // TCP_LISTEN

// The name in an address the kernel returned (getsockname, recvmsg's
// msg_name): sun_path bytes, an abstract one with its leading NUL, a path
// without its trailing NUL; empty for an unbound socket.
std::string unix_raw_name(const sockaddr_un& addr, socklen_t len);
// The address that binds or reaches that name, and its length.
socklen_t unix_addr_of(const std::string& raw_name, sockaddr_un& addr);
// For people: "/path", "@abstract" (NULs inside shown as '@', as
// /proc/net/unix does), "unbound".
std::string unix_name_display(const std::string& raw_name);
inline bool unix_name_is_path(const std::string& raw_name) {
  return !raw_name.empty() && raw_name[0] != '\0';
}
// The path a path name stands for: a relative one joined to its bind_dir.
std::string unix_abs_path(const img::UnixSocketFile& sk);

// Dump: the name, listening state and pending connections of the socket d
// describes, into out. holder: the pid whose cwd a relative path is resolved
// in (0: ours). A relative path that no longer names the socket from there
// is found by the socket's own file (SIOCUNIXFILE on local_fd, if >= 0);
// refused when that does not tell its directory either.
[[nodiscard]] Status dump_unix_name(const UnixDiag& d, pid_t holder, const std::string& what,
                                    img::UnixSocketFile& out, int local_fd = -1);

// The listener of the tree (by_ino) that sk was accepted from, or 0: a
// connected stream/seqpacket socket holding the name of a listener of the same
// type (and, for a path, the same socket file).
uint64_t accepted_from(const img::UnixSocketFile& sk,
                       const std::map<uint64_t, const img::UnixSocketFile*>& by_ino);

// sk is restored here rather than as a plain socketpair: it or its peer has a
// name, it listens, has no peer, or is a datagram socket connected one way.
// A socket whose peer is not in by_ino is not (an external peer).
bool restored_as_named(const img::UnixSocketFile& sk,
                       const std::map<uint64_t, const img::UnixSocketFile*>& by_ino);

// Restore: every socket restored_as_named() creates, binds, connects and fills
// with its queue, before the tree; out receives one fd per socket inode, above
// fd_floor.
// Queues carrying control messages wait in deferred (net/unix_socket.hpp).
class UnixDeferred;
[[nodiscard]] Status restore_named_unix_sockets(
    const std::map<uint64_t, const img::UnixSocketFile*>& by_ino, int fd_floor,
    std::map<uint64_t, UniqueFd>& out, UnixDeferred& deferred);

}  // namespace minicriu
