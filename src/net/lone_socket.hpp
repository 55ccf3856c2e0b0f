// What the socket kinds without a peer in the tree share (packet, netlink,
// raw IP, ping, UDP-Lite: src/net/*_socket.cc): each socket is made once,
// before the tree, by its kind, and handed out as dups; a receive queue that
// cannot be put back is refused at dump; AF_INET/AF_INET6 ones of a protocol
// other than TCP and UDP share one image message (IpSocketFile) and the code
// that dumps and remakes it.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "kinds/kind.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// One line when something is queued on the socket (poll says it is readable:
// nothing is consumed). kind: "a packet socket"; why: what makes it not
// re-queueable.
[[nodiscard]] Status refuse_queued(int fd, const std::string& what, const std::string& why);

// The sockets of one kind, made once at restore.
class LoneSockets {
 public:
  // The socket of this inode, kept above floor.
  void add(uint64_t ino, UniqueFd fd, int floor) { sockets_[ino] = move_fd_above(std::move(fd), floor); }
  bool has(uint64_t ino) const { return sockets_.count(ino) > 0; }
  // A dup of it: one open file description per socket, as dumped.
  [[nodiscard]] Result<UniqueFd> open(uint64_t ino) const;
  void clear() { sockets_.clear(); }

 private:
  std::map<uint64_t, UniqueFd> sockets_;
};

// An AF_INET/AF_INET6 socket of another protocol than TCP/UDP, for
// IpSocketFile: addresses, options, the queue refused unless empty.
[[nodiscard]] Status dump_ip_socket(const std::string& what, int local_fd, uint64_t ino, int flags,
                                    img::IpSocketFile& out);
// A new socket like sk: options, bound, connected.
[[nodiscard]] Result<UniqueFd> make_ip_socket(const img::IpSocketFile& sk, const std::string& what);
// "raw4 proto 253 bound 127.0.0.1 connected to 127.0.0.2", for show.
std::string describe_ip_socket(const char* kind, const img::IpSocketFile& sk);

// What makes one of the IpSocketFile kinds (raw, ping, UDP-Lite) itself: the
// kind's own file fills one and calls make_ip_socket_kind().
struct IpKindSpec {
  const char* name;        // "raw socket", for the registry and messages
  const char* word;        // "raw": for show, "raw 127.0.0.1"
  bool (*is)(int family, int type, int protocol);
  bool (*has)(const img::FileEntry&);
  const img::IpSocketFile& (*get)(const img::FileEntry&);
  img::IpSocketFile* (*mutable_get)(img::FileEntry&);
  const char* queue_why;   // why its queue cannot be put back
};
std::unique_ptr<Kind> make_ip_socket_kind(const IpKindSpec& spec);

}  // namespace minicriu
