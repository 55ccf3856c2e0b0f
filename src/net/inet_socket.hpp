// AF_INET / AF_INET6 sockets, TCP and UDP. Dump: addresses and options from
// the dumper's copy of each socket, a listener's backlog from sock_diag, an
// established connection through TCP_REPAIR (src/net/tcp_repair.cc).
// Connections are matched by their two endpoints: one whose peer is not in
// the tree needs --tcp-established; a connection waiting in the accept queue
// of a listener of the tree is carried too (its accepted end read by the
// dumper as late as possible). Restore: every socket created once, before the
// tree, in the restoring process (listeners first), handed out as dups.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "kinds/kind.hpp"
#include "minicriu.pb.h"
#include "net/inet_addr.hpp"
#include "net/tcp_repair.hpp"

namespace minicriu {

class NetworkLock;

// What the dump may do with connections it finds.
struct InetDumpPolicy {
  bool tcp_established = false;   // peers outside the tree are accepted
  bool tcp_drop_pending = false;  // unaccepted connections from outside are dropped
  bool leave_running = false;     // the tree stays: nothing may be taken from it
};

// "tcp", "tcp6", "udp", "udp6" for a socket of the image.
std::string inet_socket_name(const img::InetSocketFile& sk);
// "tcp 127.0.0.1:5000 -> 127.0.0.1:41000", "tcp [::]:5000 LISTEN"...
std::string describe_inet_socket(const img::InetSocketFile& sk);

// A listener accepts a connection that arrived at `local` (normalized).
bool listener_takes(const InetEndpoint& listener, bool v6only, const InetEndpoint& local);

// Dump side: the inet sockets of the tree, what is needed to check their
// peers at the end, and the copies of sockets left in repair mode.
class InetSocketStore {
 public:
  explicit InetSocketStore(InetDumpPolicy policy) : policy_(policy) {}
  InetSocketStore(const InetSocketStore&) = delete;
  InetSocketStore& operator=(const InetSocketStore&) = delete;
  // Repair mode off on every socket still in it (a dump that failed).
  ~InetSocketStore();

  // Fills sk for the socket behind local_fd (a copy of the tree's fd), or
  // refuses it in one line. An established connection is locked (when
  // lock is not null) and left in repair mode until finish().
  [[nodiscard]] Status dump(const std::string& what, int local_fd, uint64_t ino, int flags,
                            const std::vector<pid_t>* tree_tids, NetworkLock* lock,
                            img::InetSocketFile& sk);

  // Once every fd of the tree is seen: an error naming the first connection
  // whose peer is outside the tree (without --tcp-established), or a
  // connection waiting to be accepted that cannot be carried.
  [[nodiscard]] Status check_peers();

  // The last step before the images are written, only when the dump kills
  // the tree: the connections of the tree waiting in a listener's accept
  // queue are accepted here, and what their accepted end had received is
  // recorded in the entry of their connecting end.
  [[nodiscard]] Status take_pending(std::vector<img::FileEntry>& entries);
  // At most what take_pending() adds to entries: what each accepted end may
  // have received (its receive queue at the check, and at most what its
  // connecting end still holds unacknowledged, which the lock keeps from
  // arriving meanwhile).
  uint64_t pending_room(const std::vector<img::FileEntry>& entries) const;

  // The end of the dump. killing: the tree dies with its sockets still in
  // repair mode, so they close without a FIN or RST. Else (left running, or
  // the dump failed): repair mode off on each, the connections go on.
  void finish(bool killing);

  size_t size() const { return sockets_.size(); }

 private:
  struct Seen {
    std::string what;      // "pid 12: fd 4: tcp 127.0.0.1:5000 -> ..."
    img::InetSocketFile sk;
    UniqueFd copy;         // ours: for repair off, and a listener's accept
    bool in_repair = false;
  };
  // A connection waiting in the accept queue of a listener of the tree.
  struct Pending {
    uint64_t listener_ino;
    Connection conn;       // from the listener's side
    uint64_t client_ino;   // its connecting end in the tree, 0 if outside
    uint32_t received;     // bytes in its receive queue at the check
  };

  // Every TCP socket of the network namespace, read at the first need.
  [[nodiscard]] Result<const std::vector<InetDiag>*> tcp_diag();

  InetDumpPolicy policy_;
  std::optional<std::vector<InetDiag>> tcp_diag_;
  std::map<uint64_t, Seen> sockets_;
  std::vector<Pending> pending_;
  std::vector<UniqueFd> accepted_;  // taken from accept queues, in repair mode
};

// Restore side: every socket created once before the tree's processes, so
// they all inherit it.
class InetSocketRestorer {
 public:
  InetSocketRestorer() = default;
  InetSocketRestorer(const InetSocketRestorer&) = delete;
  InetSocketRestorer& operator=(const InetSocketRestorer&) = delete;
  // Checks every inet socket of files.img; create_all does so before it
  // makes the first socket.
  [[nodiscard]] static Status validate(const std::vector<img::FileEntry>& files);
  [[nodiscard]] static Result<std::unique_ptr<InetSocketRestorer>> create_all(
      const std::vector<img::FileEntry>& files, int fd_floor);
  // A dup of the socket: one open file description per socket, as dumped.
  [[nodiscard]] Result<UniqueFd> open(const img::InetSocketFile& sk) const;
  // Once every socket of the tree exists (a packet to a peer not yet made
  // would be answered with a RST): repair mode off, the unsent data sent.
  // Until then a socket closed by a failed restore goes silently.
  [[nodiscard]] Status resume();

 private:
  struct Made {
    img::InetSocketFile sk;
    UniqueFd fd;
    bool in_repair = false;
    TcpRestorePlan plan;
    bool connect_later = false;  // SYN_SENT: connects again at resume()
  };
  std::map<uint64_t, Made> sockets_;
};

}  // namespace minicriu
