// AF_UNIX socket pairs whose two sockets are both held by the dumped tree.
// Dump: each socket's peer found by inode through sock_diag, its receive
// queue read without consuming it (MSG_PEEK, message by message where the
// type keeps boundaries). Restore: each pair created once before the tree,
// every queue sent again from the peer, the sockets handed out as dups.
// Names, listeners, connections not yet accepted and unconnected sockets are
// in net/unix_named.{hpp,cc}, called from here.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/external.hpp"
#include "kinds/kind.hpp"
#include "base/unique_fd.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// What sock_diag says of one unix socket.
struct UnixDiag {
  uint64_t ino = 0;
  uint64_t peer_ino = 0;  // 0: not connected
  int type = 0;
  int state = 0;           // TCP_LISTEN (10) for a listening socket
  std::string name;        // bound name; abstract names start with '@'
  uint8_t shutdown = 0;
  // The name as the kernel holds it: sun_path bytes, an abstract one with its
  // leading NUL, a path without its trailing NUL.
  std::string raw_name;
  uint32_t vfs_ino = 0;    // UNIX_DIAG_VFS: the socket file's inode and
  uint32_t vfs_dev = 0;    // device (the kernel's encoding: major << 20 | minor)
  std::vector<uint64_t> icons;  // a listener's pending connections: the clients' inodes
  uint32_t rqueue = 0;     // UNIX_DIAG_RQLEN: for a listener, its pending count
  uint32_t wqueue = 0;     // and its backlog
};

// Asks NETLINK_SOCK_DIAG about the unix socket with this inode (in our
// network namespace).
[[nodiscard]] Result<UnixDiag> unix_diag_query(uint64_t ino);

// One message of a unix socket's receive queue, read without consuming it
// (for a stream, one run of bytes), with what its control messages carried.
struct UnixPeeked {
  std::string data;
  std::string from;              // a datagram's sender name (sun_path bytes)
  std::vector<UniqueFd> fds;     // SCM_RIGHTS: in flight, installed here by the peek
  std::optional<ucred> creds;    // SCM_CREDENTIALS (the receiver has SO_PASSCRED)
  bool has_control() const { return !fds.empty() || creds.has_value(); }
};

// The receive queue of a unix socket of this type, message by message; the
// socket's SO_PEEK_OFF is put back as it was.
[[nodiscard]] Result<std::vector<UnixPeeked>> peek_unix_messages(int fd, int type, const std::string& what,
                                                                bool want_from);

// The same, refusing a message that carries control messages.
// With from, each message's sender name (sun_path bytes) is added to it.
[[nodiscard]] Result<std::vector<std::string>> peek_unix_queue(int fd, int type, const std::string& what,
                                                               std::vector<std::string>* from = nullptr);

// "stream", "dgram", "seqpacket".
std::string unix_type_name(int type);

// What an external unix socket of the images is, for hooks and messages.
ExternalObject unix_external_object(const img::UnixSocketFile& sk);

// Fills a UnixSocketFile for the socket behind local_fd, or refuses it in one
// line (messages carrying fds or credentials, a relative path whose directory
// is unknown).
// holder: the pid whose cwd a relative bound path is resolved in (0: ours).
// add_file: how a file in flight (SCM_RIGHTS) gets its files.img entry
// (DumpEnv::add_file); without it such a message is refused.
using UnixAddFile = std::function<Result<uint32_t>(int local_fd, const std::string& what)>;
[[nodiscard]] Status dump_unix_socket(const std::string& what, int local_fd, uint64_t ino, int flags,
                                      img::UnixSocketFile& out, pid_t holder = 0,
                                      const UnixAddFile& add_file = nullptr);

// The file of a files.img entry, opened for the restore (RestoreEnv::shared_file).
using UnixSharedFile = std::function<Result<int>(uint32_t file_id)>;

// Queues whose messages carry control messages (files in flight,
// credentials) are filled last, at resume(): every file is open then, and
// every pid of the tree that credentials name exists. Until then the
// messages before the first such one are queued, and the shutdown of the
// sockets at both ends of such a queue waits.
class UnixDeferred {
 public:
  using Step = std::function<Status(const UnixSharedFile& files)>;
  explicit UnixDeferred(const std::vector<img::FileEntry>& files);
  UnixDeferred(const UnixDeferred&) = delete;
  UnixDeferred& operator=(const UnixDeferred&) = delete;
  // The files in flight in the queues (Kind::list_held()).
  static std::set<uint32_t> held_files(const std::vector<img::FileEntry>& files);
  // sk's shutdown waits for the queues.
  bool waits(uint64_t ino) const { return waits_.count(ino) > 0; }
  void later(Step step) { sends_.push_back(std::move(step)); }
  void shutdown_later(UniqueFd fd, int how, std::string what);
  // The queued sends, in order, then the shutdowns.
  [[nodiscard]] Status run(const UnixSharedFile& files);

 private:
  std::set<uint64_t> waits_;
  std::vector<Step> sends_;
  struct Shut {
    UniqueFd fd;
    int how;
    std::string what;
  };
  std::vector<Shut> shuts_;
};

// The control messages of message `index` of sk's queue, or null.
const img::UnixQueuedControl* unix_control_of(const img::UnixSocketFile& sk, int index);
// One message with its control messages, the fds from files: sent whole
// (a stream may take its bytes in several sends, the control going with the
// first), to `to` if given. Returns 0 or errno (EMSGSIZE: sent in part).
[[nodiscard]] Result<int> unix_send_message(int fd, const std::string& msg, const img::UnixQueuedControl* c,
                                            const UnixSharedFile* files, const sockaddr_un* to = nullptr,
                                            socklen_t to_len = 0);

// Restore steps shared with the named sockets (net/unix_named.cc): a queue
// sent again from `from` (what carries control messages, through deferred),
// buffer sizes, and the state set last (a shutdown deferred waits).
[[nodiscard]] Status unix_send_queue(int from, const img::UnixSocketFile& to, UnixDeferred* deferred);
[[nodiscard]] Status unix_set_buffers(int fd, const img::UnixSocketFile& sk);
[[nodiscard]] Status unix_set_state(int fd, const img::UnixSocketFile& sk, UnixDeferred* deferred);

// Dump side: every unix socket of the tree, to check at the end that each
// one's peer is in the tree too.
class UnixSocketStore {
 public:
  void add(const img::UnixSocketFile& sk, const FdDumpInfo& fd);
  // Every socket whose peer is not held by the tree must be accepted by the
  // policy as external (its entry in `files` is then marked so, with what is
  // known of the peer); else an error naming the first one, who holds its
  // peer (found in /proc/*/fd of the processes not in `tree`), and the option.
  // A client waiting to be accepted by a listener outside the tree counts
  // as such a socket too.
  [[nodiscard]] Status check_peers(const std::set<pid_t>& tree, const ExternalPolicy& policy,
                                   std::vector<img::FileEntry>& files);
  // A listener with connections not yet accepted: our copy of it is kept, to
  // accept them in accept_pending().
  void keep_listener(uint64_t ino, int local_fd);
  // Once every fd is seen (net/unix_named.cc): named sockets, listeners and
  // their connections not yet accepted are checked; with leave_running, a
  // connection not yet accepted is refused (reading it means accepting it).
  [[nodiscard]] Status check_named(const std::set<pid_t>& tree, bool leave_running) const;
  // The last step before the images are written, only for a dump that kills
  // the tree: accepts the connections not yet accepted on our copies of the
  // listeners (which consumes them) and records their data in the listeners'
  // entries of files.
  [[nodiscard]] Status accept_pending(std::vector<img::FileEntry>& files);
  // At most what accept_pending() adds to files.img: the data the clients of
  // the connections not yet accepted may have sent (each bounded by its
  // client's send buffer, which the kernel charges it to).
  uint64_t pending_room() const;

 private:
  struct Seen {
    uint64_t peer_ino;
    int type;
    pid_t pid;
    int fd;
    std::string what;
  };
  std::map<uint64_t, Seen> sockets_;
  struct Named {
    img::UnixSocketFile sk;  // without its queue
    std::string what;
  };
  std::map<uint64_t, Named> named_;
  std::map<uint64_t, UniqueFd> listeners_;
  // Accepted as external by check_peers (check_named leaves them alone).
  std::set<uint64_t> external_;
};

// Restore side: every pair created once, with its queues, before the
// processes of the tree, so all of them inherit it.
class UnixSocketRestorer {
 public:
  UnixSocketRestorer() = default;
  UnixSocketRestorer(const UnixSocketRestorer&) = delete;
  UnixSocketRestorer& operator=(const UnixSocketRestorer&) = delete;
  // Stand-ins for the external sockets (peer outside the tree), taken from
  // the caller before anything of the tree is made: each one's inherited fd,
  // hook answer, or a dgram socket connected again to its peer's path.
  // Fails naming the socket and --inherit-fd when one has none.
  // The keys ("socket:[INODE]") of the external sockets of files.img.
  static std::set<std::string> external_keys(const std::vector<img::FileEntry>& files);
  [[nodiscard]] static Result<std::map<uint64_t, UniqueFd>> take_external(
      const std::vector<img::FileEntry>& files, const ExternalStandIns& stand_ins);
  [[nodiscard]] static Result<std::unique_ptr<UnixSocketRestorer>> create_all(
      const std::vector<img::FileEntry>& files, int fd_floor,
      std::map<uint64_t, UniqueFd> external = {});
  // Once the tree's processes exist: the queues carrying control messages.
  [[nodiscard]] Status fill_deferred(const UnixSharedFile& files);
  // A dup of the socket: one open file description per socket, as dumped.
  [[nodiscard]] Result<UniqueFd> open(const img::UnixSocketFile& sk) const;

 private:
  std::map<uint64_t, UniqueFd> sockets_;
  std::unique_ptr<UnixDeferred> deferred_;
};

}  // namespace minicriu
