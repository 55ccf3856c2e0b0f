#include "net/unix_socket.hpp"
#include "net/sockopt.hpp"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/unix_diag.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "images/checkpoint.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"
#include "net/unix_named.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

// <linux/socket.h>: SCM_SECURITY (SO_PASSSEC), SCM_PIDFD (SO_PASSPIDFD).
constexpr int kScmSecurity = 3;
constexpr int kScmPidfd = 4;
constexpr int kSoPassPidfd = 76;  // SO_PASSPIDFD, Linux 6.5


// A new datagram socket connected to a bound name ("@x" for abstract, as
// peer_name holds it).
Result<UniqueFd> connect_unix_dgram(const std::string& name, const std::string& what) {
  std::string raw = name[0] == '@' ? std::string(1, '\0') + name.substr(1) : name;
  sockaddr_un addr;
  if (raw.size() > sizeof addr.sun_path) return failf("{}: peer name {} is too long", what, name);
  socklen_t len = unix_addr_of(raw, addr);
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return failf_errno("{}: socket", what);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return failf_errno("{}: connecting a new dgram socket to its peer {}", what, name);
  return fd;
}

// What a peek's control messages brought: the fds in flight (SCM_RIGHTS,
// installed in our process by the peek, kept), the credentials; a pidfd of
// SCM_PIDFD is closed (the receiver's SO_PASSPIDFD makes it again from the
// credentials' pid). False if a control message is of a kind not understood.
bool take_control(msghdr& msg, UnixPeeked& out) {
  bool known = true;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    size_t len = c->cmsg_len - CMSG_LEN(0);
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && len >= sizeof(ucred)) {
      ucred u;
      std::memcpy(&u, CMSG_DATA(c), sizeof u);
      out.creds = u;
      continue;
    }
    if (c->cmsg_level == SOL_SOCKET && (c->cmsg_type == SCM_RIGHTS || c->cmsg_type == kScmPidfd)) {
      for (size_t i = 0; i + sizeof(int) <= len; i += sizeof(int)) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i, sizeof fd);
        if (c->cmsg_type == SCM_RIGHTS) out.fds.emplace_back(fd);
        else ::close(fd);
      }
      continue;
    }
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == kScmSecurity) continue;  // SO_PASSSEC: made again
    known = false;
  }
  return known;
}

// One peek from the current peek offset; -1 and errno EAGAIN at the end.
ssize_t peek_once(int fd, std::vector<char>& buf, int& msg_flags, bool& unknown_control, UnixPeeked& out,
                  bool want_from) {
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred)) + 512];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  sockaddr_un addr{};
  if (want_from) {
    msg.msg_name = &addr;
    msg.msg_namelen = sizeof addr;
  }
  ssize_t n;
  do n = ::recvmsg(fd, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  msg_flags = msg.msg_flags;
  unknown_control = n >= 0 && !take_control(msg, out);
  if (n >= 0) out.data.assign(buf.data(), static_cast<size_t>(n));
  if (want_from && n >= 0) out.from = unix_raw_name(addr, msg.msg_namelen);
  return n;
}

// SO_PEEK_OFF is the application's state: whatever we set, we put back.
class PeekOffGuard {
 public:
  explicit PeekOffGuard(int fd) : fd_(fd), old_(sock_int(fd, SOL_SOCKET, SO_PEEK_OFF, -1)) {}
  PeekOffGuard(const PeekOffGuard&) = delete;
  PeekOffGuard& operator=(const PeekOffGuard&) = delete;
  void* operator new(size_t) = delete;
  ~PeekOffGuard() { (void)::setsockopt(fd_, SOL_SOCKET, SO_PEEK_OFF, &old_, sizeof old_); }
  [[nodiscard]] bool start() {
    int zero = 0;
    return ::setsockopt(fd_, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0;
  }
  int old() const { return old_; }

 private:
  int fd_;
  int old_;
};

// A receiver with SO_PASSPIDFD and without SO_PASSCRED: the peek gets a
// pidfd of each message's sender but not its pid, which the restore sends
// the message again with (SCM_CREDENTIALS) so that SO_PASSPIDFD gives a
// pidfd of the same process again. The kernel keeps every message's
// credentials whatever the receiver asks (unix_scm_to_skb): SO_PASSCRED on
// for the peek shows them, and off again after.
class PassCredGuard {
 public:
  explicit PassCredGuard(int fd) : fd_(fd) {}
  PassCredGuard(const PassCredGuard&) = delete;
  PassCredGuard& operator=(const PassCredGuard&) = delete;
  void* operator new(size_t) = delete;
  ~PassCredGuard() {
    int zero = 0;
    if (on_) (void)::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &zero, sizeof zero);
  }
  [[nodiscard]] bool start() {
    int one = 1;
    on_ = ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0;
    return on_;
  }

 private:
  int fd_;
  bool on_ = false;
};

// One unix_diag_msg and its attributes.
Status parse_unix_diag(const nlmsghdr& h, UnixDiag& d) {
  auto* m = static_cast<const unix_diag_msg*>(NLMSG_DATA(&h));
  d.ino = m->udiag_ino;
  d.type = m->udiag_type;
  d.state = m->udiag_state;
  int len = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *m));
  for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    const char* data = static_cast<const char*>(RTA_DATA(a));
    size_t size = RTA_PAYLOAD(a);
    switch (a->rta_type) {
      case UNIX_DIAG_NAME:
        // Abstract names start with a NUL byte.
        if (size > 0 && data[0] == '\0') d.name = "@" + std::string(data + 1, size - 1);
        else d.name = std::string(data, strnlen(data, size));
        d.raw_name = size > 0 && data[0] == '\0' ? std::string(data, size) : d.name;
        break;
      case UNIX_DIAG_VFS:
        if (size >= sizeof(unix_diag_vfs)) {
          unix_diag_vfs v;
          std::memcpy(&v, data, sizeof v);
          d.vfs_ino = v.udiag_vfs_ino;
          d.vfs_dev = v.udiag_vfs_dev;
        }
        break;
      case UNIX_DIAG_ICONS:
        for (size_t i = 0; i + sizeof(uint32_t) <= size; i += sizeof(uint32_t)) {
          uint32_t c;
          std::memcpy(&c, data + i, sizeof c);
          d.icons.push_back(c);
        }
        break;
      case UNIX_DIAG_RQLEN:
        if (size >= sizeof(unix_diag_rqlen)) {
          unix_diag_rqlen q;
          std::memcpy(&q, data, sizeof q);
          d.rqueue = q.udiag_rqueue;
          d.wqueue = q.udiag_wqueue;
        }
        break;
      case UNIX_DIAG_PEER: {
        uint32_t peer = 0;
        std::memcpy(&peer, data, std::min(size, sizeof peer));
        d.peer_ino = peer;
        break;
      }
      case UNIX_DIAG_SHUTDOWN:
        if (size >= 1) d.shutdown = static_cast<uint8_t>(data[0]);
        break;
      default:
        break;
    }
  }
  return {};
}

}  // namespace

std::string unix_type_name(int type) {
  switch (type) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    default: return fmt::format("type-{}", type);
  }
}

Result<UnixDiag> unix_diag_query(uint64_t ino) {
  struct {
    nlmsghdr hdr;
    unix_diag_req req;
  } rq{};
  rq.hdr.nlmsg_len = sizeof rq;
  rq.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  rq.hdr.nlmsg_flags = NLM_F_REQUEST;
  rq.hdr.nlmsg_seq = 1;
  rq.req.sdiag_family = AF_UNIX;
  rq.req.udiag_states = ~0u;
  rq.req.udiag_ino = static_cast<uint32_t>(ino);
  rq.req.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS |
                      UDIAG_SHOW_ICONS;
  // Exact lookups check the cookie unless it is "none" (all ones).
  rq.req.udiag_cookie[0] = rq.req.udiag_cookie[1] = ~0u;
  UnixDiag d;
  TRY(sock_diag_exchange(rq.hdr, socket_link(ino),
                         fmt::format("{}: sock_diag knows no such unix socket (is the unix_diag module loaded?)",
                                     socket_link(ino)),
                         [&](const nlmsghdr& h) { return parse_unix_diag(h, d); }));
  return d;
}

Result<std::vector<UnixPeeked>> peek_unix_messages(int fd, int type, const std::string& what,
                                                   bool want_from) {
  std::vector<UnixPeeked> queue;
  int inq = 0;
  if (::ioctl(fd, SIOCINQ, &inq) != 0) return failf_errno("{}: SIOCINQ", what);
  if (inq == 0 && type != SOCK_DGRAM) return queue;
  PeekOffGuard guard(fd);
  int msg_flags = 0;
  bool unknown = false;
  auto truncated = [&] {
    return failf("{}: a message queued on it carries more control data (fds, credentials) than "
                 "minicriu reads at once, or of a kind it does not know; let the application read "
                 "it before the dump", what);
  };
  // Message by message (for a stream, run by run: a peek stops after fds in
  // flight and between different credentials): with SO_PEEK_OFF set, each
  // peek moves past what it read (unix_*_recvmsg, since 4.2 for datagram kinds).
  if (!guard.start()) return failf_errno("{}: SO_PEEK_OFF", what);
  if (type == SOCK_STREAM) {
    std::vector<char> buf(static_cast<size_t>(inq));
    size_t total = 0;
    while (total < static_cast<size_t>(inq)) {
      UnixPeeked m;
      ssize_t n = peek_once(fd, buf, msg_flags, unknown, m, false);
      if (n < 0) return failf_errno("{}: peeking at its {} queued bytes", what, inq);
      if (unknown || (msg_flags & MSG_CTRUNC)) return truncated();
      if (n == 0)
        return failf("{}: only {} of its {} queued bytes can be read without consuming them "
                     "(out-of-band data in flight?); let the application read them before the dump",
                     what, total, inq);
      total += static_cast<size_t>(n);
      queue.push_back(std::move(m));
    }
    // Runs without control messages are one element, as before.
    std::vector<UnixPeeked> merged;
    for (auto& m : queue) {
      if (!merged.empty() && !merged.back().has_control() && !m.has_control()) merged.back().data += m.data;
      else merged.push_back(std::move(m));
    }
    return merged;
  }
  std::vector<char> buf(std::max(inq, sock_int(fd, SOL_SOCKET, SO_RCVBUF, 0)) + (1 << 16));
  size_t total = 0;
  for (;;) {
    UnixPeeked m;
    ssize_t n = peek_once(fd, buf, msg_flags, unknown, m, want_from);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return failf_errno("{}: peeking at its queued messages", what);
    if (unknown || (msg_flags & MSG_CTRUNC)) return truncated();
    if (msg_flags & MSG_TRUNC) return failf("{}: a queued message is larger than {} bytes", what, buf.size());
    // A peek offset does not move past an empty message: we would read it forever.
    if (n == 0)
      return failf("{}: an empty message is queued on it, which cannot be read without "
                   "consuming it; let the application read it before the dump", what);
    total += static_cast<size_t>(n);
    queue.push_back(std::move(m));
  }
  // SIOCINQ is every byte for seqpacket, the first message's for dgram.
  size_t expect = type == SOCK_SEQPACKET ? static_cast<size_t>(inq)
                  : queue.empty()        ? 0
                                         : queue.front().data.size();
  if ((type == SOCK_SEQPACKET ? total : expect) != static_cast<size_t>(inq))
    return failf("{}: its queued messages could not all be read ({} bytes read, {} queued)", what,
                 total, inq);
  return queue;
}

Result<std::vector<std::string>> peek_unix_queue(int fd, int type, const std::string& what,
                                                 std::vector<std::string>* from) {
  ASSIGN_OR_RETURN(auto msgs, peek_unix_messages(fd, type, what, from != nullptr));
  std::vector<std::string> queue;
  for (auto& m : msgs) {
    if (m.has_control())
      return failf("{}: a message queued on it carries fds or credentials (SCM_RIGHTS, "
                   "SCM_CREDENTIALS), which minicriu cannot carry here; let the application "
                   "read it before the dump", what);
    queue.push_back(std::move(m.data));
    if (from) from->push_back(std::move(m.from));
  }
  return queue;
}

Status dump_unix_socket(const std::string& what_fd, int local_fd, uint64_t ino, int flags,
                        img::UnixSocketFile& out, pid_t holder, const UnixAddFile& add_file) {
  ASSIGN_OR_RETURN(UnixDiag d, with_context(unix_diag_query(ino), what_fd));
  std::string what = fmt::format("{}: unix {} {}", what_fd, unix_type_name(d.type), socket_link(ino));
  if (d.type != SOCK_STREAM && d.type != SOCK_DGRAM && d.type != SOCK_SEQPACKET)
    return failf("{} has a type minicriu does not know", what);
  // Names, listeners and unconnected sockets: net/unix_named.cc. A socket
  // with no peer is checked once every socket of the tree is seen (a
  // connected one may wait in a listener's accept queue).
  TRY(dump_unix_name(d, holder, what, out, local_fd));
  bool passcred = sock_int(local_fd, SOL_SOCKET, SO_PASSCRED, 0) != 0;
  bool passpidfd = sock_int(local_fd, SOL_SOCKET, kSoPassPidfd, 0) != 0;
  // A listener's queue holds connections, not data (SIOCINQ refuses it).
  std::vector<UnixPeeked> queue;
  if (d.state != kUnixListening) {
    PassCredGuard creds(local_fd);
    if (passpidfd && !passcred && !creds.start())
      return failf_errno("{}: SO_PASSCRED for the peek of its queue (it has SO_PASSPIDFD)", what);
    ASSIGN_OR_RETURN(queue, peek_unix_messages(local_fd, d.type, what, d.type == SOCK_DGRAM));
  }
  std::vector<std::string> from;
  for (size_t i = 0; i < queue.size(); i++) {
    UnixPeeked& m = queue[i];
    from.push_back(m.from);
    if (!m.has_control()) continue;
    img::UnixQueuedControl* c = out.add_queue_control();
    c->set_index(static_cast<uint32_t>(i));
    if (m.creds) {
      c->set_has_creds(true);
      c->set_pid(static_cast<uint32_t>(m.creds->pid));
      c->set_uid(m.creds->uid);
      c->set_gid(m.creds->gid);
    }
    for (size_t j = 0; j < m.fds.size(); j++) {
      std::string in_flight = fmt::format("{}: fd {} in flight in queued message {}", what, j, i);
      if (!add_file)
        return failf("{}: files in flight in its queue (SCM_RIGHTS) cannot be carried here; let the "
                     "application read them before the dump", what);
      ASSIGN_OR_RETURN(uint32_t id, add_file(m.fds[j].get(), in_flight));
      c->add_file_ids(id);
    }
  }
  out.set_ino(ino);
  out.set_peer_ino(d.peer_ino);
  out.set_type(static_cast<uint32_t>(d.type));
  out.set_flags(static_cast<uint32_t>(flags & O_NONBLOCK));
  out.set_shutdown(d.shutdown);
  out.set_peek_off(sock_int(local_fd, SOL_SOCKET, SO_PEEK_OFF, -1));
  out.set_passcred(passcred);
  TRY(read_socket_options(local_fd, AF_UNIX, d.type, 0, 0, what, *out.mutable_sockopts()));
  out.set_sndbuf(static_cast<uint32_t>(sock_int(local_fd, SOL_SOCKET, SO_SNDBUF, 0)));
  out.set_rcvbuf(static_cast<uint32_t>(sock_int(local_fd, SOL_SOCKET, SO_RCVBUF, 0)));
  for (auto& m : queue) out.add_queue(std::move(m.data));
  if (d.peer_ino == 0 && d.state == kUnixConnected && d.type != SOCK_DGRAM) {
    // Waiting in an accept queue, perhaps outside the tree: the listener's name.
    sockaddr_un peer{};
    socklen_t len = sizeof peer;
    if (::getpeername(local_fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
      std::string raw = unix_raw_name(peer, len);
      if (!raw.empty()) out.set_peer_name(unix_name_display(raw));
    }
  }
  // Only a sender with a name needs recording; all-unbound senders leave it empty.
  bool named_sender = false;
  for (auto& f : from) named_sender |= !f.empty();
  if (named_sender)
    for (auto& f : from) out.add_queue_from(std::move(f));
  return {};
}

void UnixSocketStore::add(const img::UnixSocketFile& sk, const FdDumpInfo& fd) {
  sockets_.emplace(sk.ino(), Seen{sk.peer_ino(), static_cast<int>(sk.type()), fd.pid, fd.fd, fd.what});
  Named n{sk, fd.what};
  n.sk.clear_queue();
  named_.emplace(sk.ino(), std::move(n));
}

ExternalObject unix_external_object(const img::UnixSocketFile& sk) {
  ExternalObject o;
  o.kind = "unix";
  o.key = socket_link(sk.ino());
  o.inode = sk.ino();
  o.type = unix_type_name(static_cast<int>(sk.type()));
  o.peer_inode = sk.peer_ino();
  o.peer_name = sk.peer_name();
  o.peer_pid = static_cast<pid_t>(sk.peer_pid());
  if (sk.peer_ino() == 0)
    o.description = fmt::format("unix {} {} waiting to be accepted by a listener outside the tree{}", o.type,
                                o.key, o.peer_name.empty() ? "" : " on " + o.peer_name);
  else
    o.description = fmt::format("unix {} {} connected to {}{}{}", o.type, o.key, socket_link(sk.peer_ino()),
                                o.peer_name.empty() ? "" : " (" + o.peer_name + ")",
                                o.peer_pid ? fmt::format(" held by pid {} ({})", o.peer_pid, sk.peer_comm())
                                           : std::string());
  return o;
}

Status UnixSocketStore::check_peers(const std::set<pid_t>& tree, const ExternalPolicy& policy,
                                    std::vector<img::FileEntry>& files) {
  std::map<uint64_t, img::UnixSocketFile*> entries;
  for (auto& f : files)
    if (f.has_unix_sk()) entries[f.unix_sk().ino()] = f.mutable_unix_sk();
  std::set<uint64_t> waiting_in_tree;  // clients in the accept queue of a listener of the tree
  for (auto& [ino, n] : named_)
    for (auto& p : n.sk.pending()) waiting_in_tree.insert(p.client_ino());
  for (auto& [ino, s] : sockets_) {
    std::string what = fmt::format("{}: unix {} {}", s.what, unix_type_name(s.type), socket_link(ino));
    if (s.peer_ino == 0) {
      // Unconnected, listening, waiting on a listener of the tree, or its
      // peer closed: check_named(). Connected with no peer inode and still
      // open both ways: waiting to be accepted by a listener outside (an
      // embryo socket has no inode).
      const img::UnixSocketFile& n = named_.at(ino).sk;
      if (s.type == SOCK_DGRAM || n.state() != kUnixConnected || n.shutdown() != 0 ||
          waiting_in_tree.count(ino))
        continue;
      img::UnixSocketFile& sk = *entries.at(ino);
      ExternalObject obj = unix_external_object(sk);
      obj.pid = s.pid;
      obj.fd = s.fd;
      if (!policy.accepts(obj))
        return failf("{} waits to be accepted by a listener outside the dumped tree{}; to dump it as "
                     "external pass --external unix[{}] (or --ext-unix-sk for every such socket) and "
                     "restore with --inherit-fd fd[N]:{}", what,
                     sk.peer_name().empty() ? "" : " (" + sk.peer_name() + ")", ino, socket_link(ino));
      sk.set_external(true);
      external_.insert(ino);
      continue;
    }
    auto peer = sockets_.find(s.peer_ino);
    if (peer != sockets_.end()) {
      // A datagram socket may be connected to one that is not connected back.
      if (peer->second.peer_ino != ino && s.type != SOCK_DGRAM)
        return failf("{} is connected to {}, which sock_diag says is connected elsewhere; a "
                     "{} connection has two ends, so the socket table changed under the dump or "
                     "is not understood; dump again, and report it if it persists", what,
                     socket_link(s.peer_ino), unix_type_name(s.type));
      continue;
    }
    // The peer is outside: what is known of it, for the user and the hook.
    // Ourselves included among the holders: a runtime linking us may hold it.
    img::UnixSocketFile& sk = *entries.at(ino);
    std::string link = socket_link(s.peer_ino);
    ASSIGN_OR_RETURN(auto holder, proc::find_fd_holder({link}, tree));
    if (holder) {
      sk.set_peer_pid(static_cast<uint32_t>(holder->pid));
      sk.set_peer_comm(holder->comm);
    }
    if (auto pd = unix_diag_query(s.peer_ino); pd) sk.set_peer_name(pd->name);
    ExternalObject obj = unix_external_object(sk);
    obj.pid = s.pid;
    obj.fd = s.fd;
    if (!policy.accepts(obj)) {
      std::string peer = fmt::format("{}{}", link, sk.peer_name().empty() ? "" : " (" + sk.peer_name() + ")");
      std::string how = fmt::format("to dump it as external pass --external unix[{}] (or "
                                    "--ext-unix-sk for every such socket) and restore with "
                                    "--inherit-fd fd[N]:{}", ino, socket_link(ino));
      if (holder)
        return failf("{} is connected to {} held by pid {} ({}) outside the dumped tree; {}", what,
                     peer, holder->pid, holder->comm, how);
      return failf("{} is connected to {}, which no process holds (it may be in flight in an "
                   "SCM_RIGHTS message); {}", what, peer, how);
    }
    // What the peer sent and we did not read yet cannot come back: the stand-in
    // at restore is a new connection.
    size_t queued = 0;
    for (auto& m : sk.queue()) queued += m.size();
    if (queued > 0 || sk.queue_size() > 0)
      return failf("{}: {} byte(s) its peer outside the tree sent are queued on it, which a "
                   "socket standing in for it at restore cannot carry; dump when the "
                   "application has read them", what, queued);
    sk.set_external(true);
  }
  return {};
}

std::set<std::string> UnixSocketRestorer::external_keys(const std::vector<img::FileEntry>& files) {
  std::set<std::string> keys;
  for (auto& f : files)
    if (f.has_unix_sk() && f.unix_sk().external()) keys.insert(socket_link(f.unix_sk().ino()));
  return keys;
}

Result<std::map<uint64_t, UniqueFd>> UnixSocketRestorer::take_external(
    const std::vector<img::FileEntry>& files, const ExternalStandIns& stand_ins) {
  std::map<uint64_t, UniqueFd> out;
  for (auto& f : files) {
    if (!f.has_unix_sk() || !f.unix_sk().external()) continue;
    const img::UnixSocketFile& sk = f.unix_sk();
    if (out.count(sk.ino())) continue;
    ExternalObject obj = unix_external_object(sk);
    ASSIGN_OR_RETURN(UniqueFd fd, stand_ins.take(obj, 0));
    if (!fd && sk.type() == SOCK_DGRAM && !sk.peer_name().empty()) {
      // A datagram socket talks to a name (a log daemon's /dev/log): a new
      // socket connected to it stands in without any help.
      ASSIGN_OR_RETURN(fd, connect_unix_dgram(sk.peer_name(), obj.key));
    }
    if (!fd)
      return failf("{}: its peer was outside the dumped tree and nothing stands in for it; "
                   "restore with --inherit-fd fd[N]:{} where N is an fd of minicriu holding a "
                   "socket to use in its place", obj.description, obj.key);
    out.emplace(sk.ino(), std::move(fd));
  }
  return out;
}

UnixDeferred::UnixDeferred(const std::vector<img::FileEntry>& files) {
  for (auto& f : files)
    if (f.has_unix_sk() && f.unix_sk().queue_control_size() > 0) {
      waits_.insert(f.unix_sk().ino());
      if (f.unix_sk().peer_ino()) waits_.insert(f.unix_sk().peer_ino());
    }
}

std::set<uint32_t> UnixDeferred::held_files(const std::vector<img::FileEntry>& files) {
  std::set<uint32_t> ids;
  for (auto& f : files)
    if (f.has_unix_sk())
      for (auto& c : f.unix_sk().queue_control()) ids.insert(c.file_ids().begin(), c.file_ids().end());
  return ids;
}

void UnixDeferred::shutdown_later(UniqueFd fd, int how, std::string what) {
  shuts_.push_back({std::move(fd), how, std::move(what)});
}

Status UnixDeferred::run(const UnixSharedFile& files) {
  for (auto& step : sends_) TRY(step(files));
  sends_.clear();
  for (auto& s : shuts_)
    if (::shutdown(s.fd.get(), s.how) != 0) return failf_errno("{}: shutdown", s.what);
  shuts_.clear();
  return {};
}

const img::UnixQueuedControl* unix_control_of(const img::UnixSocketFile& sk, int index) {
  for (auto& c : sk.queue_control())
    if (c.index() == static_cast<uint32_t>(index)) return &c;
  return nullptr;
}

Result<int> unix_send_message(int fd, const std::string& m, const img::UnixQueuedControl* c,
                              const UnixSharedFile* files, const sockaddr_un* to, socklen_t to_len) {
  std::vector<int> fds;
  if (c) {
    if (c->file_ids_size() > 0 && !files) return fail("files in flight, but no file to send");
    for (uint32_t id : c->file_ids()) {
      ASSIGN_OR_RETURN(int f, (*files)(id));
      fds.push_back(f);
    }
  }
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred))];
  if (fds.size() > 253) return fail("more than 253 files in flight in one message");
  size_t done = 0;
  bool control = c && (!fds.empty() || c->has_creds());
  for (;;) {
    iovec iov{const_cast<char*>(m.data()) + done, m.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (to && done == 0) {
      msg.msg_name = const_cast<sockaddr_un*>(to);
      msg.msg_namelen = to_len;
    }
    if (control) {
      std::memset(cbuf, 0, sizeof cbuf);
      msg.msg_control = cbuf;
      msg.msg_controllen = (fds.empty() ? 0 : CMSG_SPACE(sizeof(int) * fds.size())) +
                           (c->has_creds() ? CMSG_SPACE(sizeof(ucred)) : 0);
      cmsghdr* h = CMSG_FIRSTHDR(&msg);
      if (!fds.empty()) {
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(h), fds.data(), sizeof(int) * fds.size());
        h = CMSG_NXTHDR(&msg, h);
      }
      if (c->has_creds()) {
        // As root the restorer may send another process's pid, uid and gid.
        ucred u{static_cast<pid_t>(c->pid()), c->uid(), c->gid()};
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_CREDENTIALS;
        h->cmsg_len = CMSG_LEN(sizeof u);
        std::memcpy(CMSG_DATA(h), &u, sizeof u);
      }
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    done += static_cast<size_t>(n);
    control = false;
    if (done >= m.size()) return 0;
    if (to) return EMSGSIZE;  // a datagram goes whole
  }
}

namespace {

Status send_range(int from, const img::UnixSocketFile& to, int first, int last, const UnixSharedFile* files) {
  for (int i = first; i < last; i++) {
    const std::string& m = to.queue(i);
    ASSIGN_OR_RETURN(int err, with_context(unix_send_message(from, m, unix_control_of(to, i), files),
                                           fmt::format("{}: queued message {}", socket_link(to.ino()), i)));
    if (err != 0) {
      errno = err;
      return failf_errno("{}: sending its {} queued bytes back", socket_link(to.ino()), m.size());
    }
  }
  return {};
}

// The messages before the first one with control messages now, the rest
// once the tree exists (deferred).
Status send_queue(int from, const img::UnixSocketFile& to, UnixDeferred* deferred) {
  int first = to.queue_size();
  for (auto& c : to.queue_control()) first = std::min(first, static_cast<int>(c.index()));
  TRY(send_range(from, to, 0, first, nullptr));
  if (first == to.queue_size()) return {};
  if (!deferred)
    return failf("{}: its queue carries files or credentials, which cannot be sent back here",
                 socket_link(to.ino()));
  ASSIGN_OR_RETURN(UniqueFd dup, dup_description(from, socket_link(to.ino())));
  auto sender = std::make_shared<UniqueFd>(std::move(dup));
  auto copy = std::make_shared<img::UnixSocketFile>(to);
  deferred->later([sender, copy, first](const UnixSharedFile& files) {
    return send_range(sender->get(), *copy, first, copy->queue_size(), &files);
  });
  return {};
}

// Buffer sizes before any byte is sent back: a unix queue is charged to its
// sender's SO_SNDBUF, so one that an application had raised must be raised
// again first. The *FORCE options pass net.core.[rw]mem_max (CAP_NET_ADMIN).
Status set_buffers(int fd, const img::UnixSocketFile& sk) {
  struct Buf {
    uint32_t want;
    int opt, force;
    const char* name;
  };
  for (const Buf& b : {Buf{sk.sndbuf(), SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF"},
                       Buf{sk.rcvbuf(), SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF"}}) {
    if (b.want == 0 || static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, b.opt, 0)) == b.want) continue;
    // The kernel doubles what it is given.
    int half = static_cast<int>(b.want / 2);
    if (::setsockopt(fd, SOL_SOCKET, b.force, &half, sizeof half) != 0 &&
        ::setsockopt(fd, SOL_SOCKET, b.opt, &half, sizeof half) != 0)
      return failf_errno("{}: {} of {}", socket_link(sk.ino()), b.name, b.want);
  }
  return {};
}

Status set_state(int fd, const img::UnixSocketFile& sk, UnixDeferred* deferred) {
  std::string what = socket_link(sk.ino());
  if (sk.passcred()) {
    int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
      return failf_errno("{}: SO_PASSCRED", what);
  }
  if (sk.peek_off() >= 0) {
    int off = sk.peek_off();
    if (::setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) != 0)
      return failf_errno("{}: SO_PEEK_OFF", what);
  }
  // sk_shutdown bits: 1 receive, 2 send; shutdown(2) takes 0, 1, 2.
  if (sk.shutdown() & 3) {
    int how = (sk.shutdown() & 3) == 3 ? SHUT_RDWR : (sk.shutdown() & 1) ? SHUT_RD : SHUT_WR;
    if (deferred && deferred->waits(sk.ino())) {
      ASSIGN_OR_RETURN(UniqueFd dup, dup_description(fd, what));
      deferred->shutdown_later(std::move(dup), how, what);
    } else if (::shutdown(fd, how) != 0) {
      return failf_errno("{}: shutdown", what);
    }
  }
  TRY(set_socket_options(fd, sk.sockopts(), what));
  TRY(attach_socket_filter(fd, sk.sockopts(), what));
  // Exactly as dumped: a stand-in for an external socket may come with
  // other flags.
  int fl = ::fcntl(fd, F_GETFL);
  int want = (fl & ~O_NONBLOCK) | static_cast<int>(sk.flags() & O_NONBLOCK);
  if (fl < 0 || (want != fl && ::fcntl(fd, F_SETFL, want) != 0)) return failf_errno("{}: F_SETFL", what);
  return {};
}

}  // namespace

Status unix_send_queue(int from, const img::UnixSocketFile& to, UnixDeferred* deferred) {
  return send_queue(from, to, deferred);
}
Status unix_set_buffers(int fd, const img::UnixSocketFile& sk) { return set_buffers(fd, sk); }
Status unix_set_state(int fd, const img::UnixSocketFile& sk, UnixDeferred* deferred) {
  return set_state(fd, sk, deferred);
}

Result<std::unique_ptr<UnixSocketRestorer>> UnixSocketRestorer::create_all(
    const std::vector<img::FileEntry>& files, int fd_floor, std::map<uint64_t, UniqueFd> external) {
  auto r = std::make_unique<UnixSocketRestorer>();
  r->deferred_ = std::make_unique<UnixDeferred>(files);
  UnixDeferred* deferred = r->deferred_.get();
  std::map<uint64_t, const img::UnixSocketFile*> by_ino;
  for (auto& f : files)
    if (f.has_unix_sk()) by_ino[f.unix_sk().ino()] = &f.unix_sk();
  for (auto& [ino, sk] : by_ino) {
    if (r->sockets_.count(ino)) continue;
    if (sk->external()) {
      auto given = external.find(ino);
      if (given == external.end()) return failf("{}: nothing stands in for it", socket_link(ino));
      UniqueFd fd = move_fd_above(std::move(given->second), fd_floor);
      // A new connection: the application's options and flags, not the old
      // connection's shutdown state or queue.
      TRY(set_buffers(fd.get(), *sk));
      img::UnixSocketFile state = *sk;
      state.set_shutdown(0);
      TRY(set_state(fd.get(), state, nullptr));
      r->sockets_.emplace(ino, std::move(fd));
      continue;
    }
    if (restored_as_named(*sk, by_ino)) continue;
    auto peer = by_ino.find(sk->peer_ino());
    if (peer == by_ino.end() || peer->second->peer_ino() != ino || peer->second->type() != sk->type())
      return failf("{}: its peer {} is not the other socket of a pair in files.img", socket_link(ino),
                   socket_link(sk->peer_ino()));
    int sv[2];
    if (::socketpair(AF_UNIX, static_cast<int>(sk->type()) | SOCK_CLOEXEC, 0, sv) != 0)
      return failf_errno("{}: socketpair", socket_link(ino));
    UniqueFd a = move_fd_above(UniqueFd(sv[0]), fd_floor);
    UniqueFd b = move_fd_above(UniqueFd(sv[1]), fd_floor);
    // Each queue comes from the peer, as the application's data did, before
    // shutdown closes a direction.
    TRY(set_buffers(a.get(), *sk));
    TRY(set_buffers(b.get(), *peer->second));
    TRY(send_queue(b.get(), *sk, deferred));
    TRY(send_queue(a.get(), *peer->second, deferred));
    TRY(set_state(a.get(), *sk, deferred));
    TRY(set_state(b.get(), *peer->second, deferred));
    r->sockets_.emplace(ino, std::move(a));
    r->sockets_.emplace(sk->peer_ino(), std::move(b));
  }
  TRY(restore_named_unix_sockets(by_ino, fd_floor, r->sockets_, *deferred));
  return r;
}

Status UnixSocketRestorer::fill_deferred(const UnixSharedFile& files) { return deferred_->run(files); }

Result<UniqueFd> UnixSocketRestorer::open(const img::UnixSocketFile& sk) const {
  auto it = sockets_.find(sk.ino());
  if (it == sockets_.end()) return failf("{} was not created", socket_link(sk.ino()));
  return dup_description(it->second.get(), socket_link(sk.ino()));
}

namespace {

std::string describe_unix(const img::UnixSocketFile& sk) {
  if (sk.external())
    return fmt::format("{}; external: restore with --inherit-fd fd[N]:socket:[{}]{}",
                       unix_external_object(sk).description, sk.ino(),
                       sk.type() == SOCK_DGRAM && !sk.peer_name().empty()
                           ? " or let it connect to " + sk.peer_name() + " again" : "");
  size_t bytes = 0;
  for (auto& m : sk.queue()) bytes += m.size();
  // A stream's queue is one run of bytes; the other types keep messages.
  std::string queued = sk.type() == SOCK_STREAM
                           ? fmt::format("{} byte(s) queued", bytes)
                           : fmt::format("{} message(s) of {} byte(s) queued", sk.queue_size(), bytes);
  if (sk.queue_control_size() > 0) {
    int files = 0;
    for (auto& c : sk.queue_control()) files += c.file_ids_size();
    queued += fmt::format(" ({} carrying {} file(s) in flight or credentials)", sk.queue_control_size(), files);
  }
  std::string named;
  if (!sk.name().empty()) {
    static const char* const kPath[] = {"", "", " (path unlinked)", " (path replaced by another file)"};
    named = fmt::format(" bound to {}{}", unix_name_display(sk.name()), kPath[sk.path_state() & 3]);
  }
  if (sk.state() == kUnixListening)
    return fmt::format("unix {} socket:[{}]{} listening (backlog {}), {} connection(s) not yet accepted",
                       unix_type_name(static_cast<int>(sk.type())), sk.ino(), named, sk.backlog(),
                       sk.pending_size());
  std::string peer = sk.peer_ino() ? fmt::format("peer socket:[{}]", sk.peer_ino())
                     : sk.state() == kUnixConnected ? std::string("waiting to be accepted")
                                                    : std::string("unconnected");
  std::string opts = describe_socket_options(sk.sockopts());
  return fmt::format("unix {} socket:[{}]{} {}, {}{}{}", unix_type_name(static_cast<int>(sk.type())), sk.ino(),
                     named, peer, queued, (sk.flags() & 04000) ? ", non-blocking" : "",
                     opts.empty() ? "" : ", " + opts);
}

class UnixSocketKind final : public Kind {
 public:
  const char* name() const override { return "unix socket"; }

  bool takes(const FdDumpInfo& fd) const override {
    return S_ISSOCK(fd.st.st_mode) && fd.local_fd >= 0 &&
           sock_int(fd.local_fd, SOL_SOCKET, SO_DOMAIN, -1) == AF_UNIX;
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env) override {
    img::UnixSocketFile* sk = entry.mutable_unix_sk();
    TRY(dump_unix_socket(fd.what, fd.local_fd, fd.st.st_ino, fd.fdinfo.flags, *sk, fd.pid, env.add_file));
    store_.add(*sk, fd);
    if (sk->pending_size() > 0) store_.keep_listener(sk->ino(), fd.local_fd);
    return {};
  }

  Status check(const DumpTree& tree, DumpEnv& env) override {
    TRY(store_.check_peers(tree.pids, env.external, *env.files));
    return store_.check_named(tree.pids, env.options.leave_running);
  }

  // Connections not yet accepted on a listener of the tree are accepted (a
  // dump that kills the tree only) to read the data their clients sent.
  bool is_destructive() const override { return true; }
  uint64_t destructive_room(const DumpEnv&) const override { return store_.pending_room(); }
  Status destructive(DumpEnv& env) override { return store_.accept_pending(*env.files); }

  bool owns(const img::FileEntry& entry) const override { return entry.has_unix_sk(); }

  void list_external(const RestoreEnv& env, std::set<std::string>& keys) const override {
    keys.merge(UnixSocketRestorer::external_keys(env.checkpoint.files));
  }

  // What stands in for the external sockets (peer outside the tree): asked
  // for before anything is made, so a missing one costs nothing.
  Status take_stand_ins(const ExternalStandIns& stand_ins, const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(external_, UnixSocketRestorer::take_external(env.checkpoint.files, stand_ins));
    return {};
  }

  Status create_shared(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_,
                     UnixSocketRestorer::create_all(env.checkpoint.files, env.fd_floor, std::move(external_)));
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    if (!restorer_) return fail("unix sockets were not created for this restore");
    return restorer_->open(entry.unix_sk());
  }

  void list_held(const RestoreEnv& env, std::set<uint32_t>& ids) const override {
    ids.merge(UnixDeferred::held_files(env.checkpoint.files));
  }

  // Every process of the tree exists: the queues carrying files in flight and
  // credentials are filled now.
  Status resume(const RestoreEnv& env) override {
    if (restorer_) TRY(restorer_->fill_deferred(env.shared_file));
    restorer_.reset();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_unix(f.unix_sk()); }

 private:
  UnixSocketStore store_;
  std::map<uint64_t, UniqueFd> external_;
  std::unique_ptr<UnixSocketRestorer> restorer_;
};

}  // namespace

std::unique_ptr<Kind> make_unix_socket_kind() { return std::make_unique<UnixSocketKind>(); }

}  // namespace minicriu
