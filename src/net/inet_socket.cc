#include "net/inet_socket.hpp"
#include "net/sockopt.hpp"
#include "proc/proc_parse.hpp"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <cstring>

#include "images/checkpoint.hpp"
#include "net/inet_options.hpp"
#include "net/network_lock.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"
#include "base/journal.hpp"
#include "net/tcp_repair.hpp"
#include "net/udp_queue.hpp"
#include "proc/privileges.hpp"

namespace minicriu {

namespace {

InetEndpoint local_of(const img::InetSocketFile& sk) {
  auto e = endpoint_from_bytes(sk.local_addr(), sk.local_port());
  return e ? *e : InetEndpoint{};
}
InetEndpoint remote_of(const img::InetSocketFile& sk) {
  auto e = endpoint_from_bytes(sk.remote_addr(), sk.remote_port());
  return e ? *e : InetEndpoint{};
}
bool connected(const img::InetSocketFile& sk) { return !sk.remote_addr().empty(); }

Result<InetEndpoint> sock_endpoint(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int r = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
               : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (r != 0) return fail_errno(peer ? "getpeername" : "getsockname");
  return endpoint_from_sockaddr(ss);
}

// Some thread of the tree holds socket:[ino] (a scan of their /proc fds).
bool held_by(uint64_t ino, const std::vector<pid_t>& tids) {
  std::set<std::string> want{socket_link(ino)};
  return std::any_of(tids.begin(), tids.end(), [&](pid_t tid) { return proc::find_fd_link(tid, want).has_value(); });
}

const InetDiag* find_by_ino(const std::vector<InetDiag>& diag, uint64_t ino) {
  for (auto& d : diag)
    if (d.ino == ino) return &d;
  return nullptr;
}

// Whether the other end of conn is held by the tree (for the lock only; the
// dump's own check matches the tree's sockets against each other).
bool peer_in_tree(const Connection& conn, const std::vector<InetDiag>& diag, const std::vector<pid_t>* tids) {
  if (!tids) return false;
  for (auto& d : diag) {
    if (make_connection(d.local, d.remote) != conn.reversed() || d.state == kTcpListen) continue;
    if (d.ino != 0) return held_by(d.ino, *tids);
    // Waiting in an accept queue: the tree holds it if it holds the listener.
    for (auto& l : diag)
      if (l.state == kTcpListen && l.ino && listener_takes(l.local, false, d.local.normalized()))
        return held_by(l.ino, *tids);
  }
  return false;
}

std::string family_name(int family) {
  return family == AF_INET ? "AF_INET" : family == AF_INET6 ? "AF_INET6" : fmt::format("family {}", family);
}

}  // namespace

std::string inet_socket_name(const img::InetSocketFile& sk) {
  return fmt::format("{}{}", is_tcp(sk) ? "tcp" : "udp", sk.family() == AF_INET6 ? "6" : "");
}

std::string describe_inet_socket(const img::InetSocketFile& sk) {
  std::string s = fmt::format("{} {}", inet_socket_name(sk), format_endpoint(local_of(sk)));
  if (connected(sk)) s += " -> " + format_endpoint(remote_of(sk));
  if (is_tcp(sk)) s += " " + tcp_state_name(static_cast<int>(sk.state()));
  return s;
}

bool listener_takes(const InetEndpoint& listener, bool v6only, const InetEndpoint& local) {
  InetEndpoint l = listener.normalized();
  if (l.port != local.port) return false;
  if (l == local) return true;
  if (!l.is_any()) return false;
  // 0.0.0.0 takes IPv4; :: takes both unless IPV6_V6ONLY.
  if (l.family == AF_INET) return local.family == AF_INET;
  return local.family == AF_INET6 || !v6only;
}

InetSocketStore::~InetSocketStore() { finish(false); }

Result<const std::vector<InetDiag>*> InetSocketStore::tcp_diag() {
  // Read once for the whole tree: every answer lists every TCP socket of the
  // namespace. What the frozen tree holds does not change meanwhile.
  if (!tcp_diag_) {
    ASSIGN_OR_RETURN(auto all, inet_diag_dump_all(IPPROTO_TCP));
    tcp_diag_ = std::move(all);
  }
  return &*tcp_diag_;
}

Status InetSocketStore::dump(const std::string& what_fd, int local_fd, uint64_t ino, int flags,
                             const std::vector<pid_t>* tree_tids, NetworkLock* lock,
                             img::InetSocketFile& sk) {
  int family = sock_int(local_fd, SOL_SOCKET, SO_DOMAIN, -1);
  int type = sock_int(local_fd, SOL_SOCKET, SO_TYPE, -1);
  int protocol = sock_int(local_fd, SOL_SOCKET, SO_PROTOCOL, -1);
  bool tcp = type == SOCK_STREAM && protocol == IPPROTO_TCP;
  bool udp = type == SOCK_DGRAM && protocol == IPPROTO_UDP;
  if (!tcp && !udp) {
    std::string kind = type == SOCK_RAW                 ? "a raw socket"
                       : protocol == IPPROTO_SCTP       ? "an SCTP socket"
                       : protocol == IPPROTO_UDPLITE    ? "a UDP-Lite socket"
                       : protocol == IPPROTO_MPTCP      ? "an MPTCP socket"
                       : type == SOCK_DGRAM && protocol == IPPROTO_ICMP ? "an ICMP (ping) socket"
                                                        : fmt::format("a socket of type {} protocol {}", type, protocol);
    return failf("{}: socket:[{}] is {} ({}), which minicriu cannot checkpoint (only TCP and UDP "
                 "inet sockets); close it before the dump", what_fd, ino, kind, family_name(family));
  }
  sk.set_ino(ino);
  sk.set_family(static_cast<uint32_t>(family));
  sk.set_type(static_cast<uint32_t>(type));
  sk.set_protocol(static_cast<uint32_t>(protocol));
  sk.set_flags(static_cast<uint32_t>(flags & O_NONBLOCK));
  ASSIGN_OR_RETURN(InetEndpoint local, with_context(sock_endpoint(local_fd, false), what_fd));
  sk.set_local_addr(local.addr_bytes());
  sk.set_local_port(local.port);
  auto remote = sock_endpoint(local_fd, true);
  if (!remote && remote.error().err() != ENOTCONN)
    return std::unexpected(with_context(remote, what_fd).error());
  if (remote) {
    sk.set_remote_addr(remote->addr_bytes());
    sk.set_remote_port(remote->port);
  }
  read_inet_options(local_fd, sk, *sk.mutable_opts());

  UniqueFd copy(::fcntl(local_fd, F_DUPFD_CLOEXEC, 0));
  if (!copy) return failf_errno("{}: dup", what_fd);
  std::string what;
  if (udp) {
    sk.set_state(remote ? kTcpEstablished : kTcpClose);
    what = fmt::format("{}: {}", what_fd, describe_inet_socket(sk));
    TRY(read_socket_options(local_fd, family, type, protocol, 0, what, *sk.mutable_sockopts()));
    ASSIGN_OR_RETURN(auto queue, peek_udp_queue(local_fd, what));
    for (auto& d : queue) *sk.add_queue() = std::move(d);
    sockets_[ino] = Seen{what, sk, std::move(copy), false};
    sockets_[ino].sk.clear_queue();
    return {};
  }

  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(local_fd, SOL_TCP, TCP_INFO, &ti, &len) != 0) return failf_errno("{}: TCP_INFO", what_fd);
  sk.set_state(ti.tcpi_state);
  what = fmt::format("{}: {}", what_fd, describe_inet_socket(sk));
  TRY(read_socket_options(local_fd, family, type, protocol, ti.tcpi_state, what, *sk.mutable_sockopts()));
  switch (ti.tcpi_state) {
    case kTcpListen: {
      ASSIGN_OR_RETURN(const auto* diag, with_context(tcp_diag(), what));
      const InetDiag* d = find_by_ino(*diag, ino);
      if (!d) return failf("{}: sock_diag does not know it (is it in another network namespace?)", what);
      sk.set_backlog(d->wqueue);
      sk.set_shutdown(d->shutdown);
      sockets_[ino] = Seen{what, sk, std::move(copy), false};
      return {};
    }
    case kTcpClose:
      if (local.port != 0) {
        // A socket bound and not connected is in the bind table, which
        // sock_diag shows (Linux 6.6+, as "bound inactive", with state CLOSE);
        // a connection that has closed (reset, or shut down by both ends)
        // still names its old port, but holds it no more.
        ASSIGN_OR_RETURN(const auto* diag, with_context(tcp_diag(), what));
        if (!find_by_ino(*diag, ino))
          return failf("{}: a TCP connection that has closed (reset, or shut down by both ends) "
                       "cannot be checkpointed yet; close its fd in the application before the "
                       "dump", what);
      }
      sockets_[ino] = Seen{what, sk, std::move(copy), false};
      return {};
    case kTcpSynSent: {
      // Connecting: restored as a socket that connects again to the same
      // peer (getpeername has no answer yet; sock_diag knows the peer).
      ASSIGN_OR_RETURN(const auto* diag, with_context(tcp_diag(), what));
      const InetDiag* d = find_by_ino(*diag, ino);
      if (!d) return failf("{}: sock_diag does not know it (is it in another network namespace?)", what);
      sk.set_remote_addr(d->remote.addr_bytes());
      sk.set_remote_port(d->remote.port);
      what = fmt::format("{}: {}", what_fd, describe_inet_socket(sk));
      sockets_[ino] = Seen{what, sk, std::move(copy), false};
      return {};
    }
    default:
      if (tcp_connected_state(ti.tcpi_state)) break;
      return failf("{}: a TCP socket in state {} cannot be checkpointed yet (only LISTEN, "
                   "SYN_SENT, ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING and unconnected "
                   "ones); let the connection finish connecting or closing and dump again",
                   what, tcp_state_name(ti.tcpi_state));
  }
  ASSIGN_OR_RETURN(const auto* diag, with_context(tcp_diag(), what));
  if (const InetDiag* d = find_by_ino(*diag, ino)) sk.set_shutdown(d->shutdown);
  // A shutdown for sending is a FIN, which its state tells.
  if ((sk.shutdown() & 2) && !tcp_fin_sent(ti.tcpi_state))
    return failf("{} was shut down for sending but has not sent its FIN, which minicriu cannot "
                 "restore; dump it again in a moment", what);
  // TCP_REPAIR and the network lock are CAP_NET_ADMIN's: refused here, before
  // the lock is taken or the socket touched.
  if (!have_cap(cap::kNetAdmin))
    return std::unexpected(Error(
        fmt::format("{}: a TCP connection is read with TCP_REPAIR and held silent by the network lock, which "
                    "need CAP_NET_ADMIN; minicriu runs without it: dump it as root, or close the connection "
                    "first", what),
        EPERM));
  Connection conn = make_connection(local, *remote);
  if (lock) {
    LockedConnection lc;
    lc.family = conn.local.family;
    lc.local = conn.local.addr;
    lc.remote = conn.remote.addr;
    lc.local_port = conn.local.port;
    lc.remote_port = conn.remote.port;
    lc.peer_outside = !peer_in_tree(conn, *diag, tree_tids);
    lc.what = what;
    TRY(lock->add(lc));
  }
  // Recorded before repair mode goes on, so that every way out turns it off.
  Seen& seen = sockets_[ino] = Seen{what, sk, std::move(copy), false};
  // Repair mode outlives us: its guardian turns it off if we die.
  TRY(journal_note(fmt::format("tcp-repair {}", ino)));
  TRY(tcp_repair_on(seen.copy.get(), what));
  seen.in_repair = true;
  TRY(dump_tcp_connection(seen.copy.get(), ti.tcpi_state, what, *sk.mutable_tcp()));
  seen.sk = sk;
  seen.sk.clear_tcp();  // the queues are in the image; the checks need addresses only
  return {};
}

Status InetSocketStore::check_peers() {
  pending_.clear();
  std::map<Connection, uint64_t> established;
  for (auto& [ino, s] : sockets_)
    if (is_tcp(s.sk) && tcp_connected_state(static_cast<int>(s.sk.state())))
      established[make_connection(local_of(s.sk), remote_of(s.sk))] = ino;
  bool any_listener = std::any_of(sockets_.begin(), sockets_.end(),
                                  [](auto& s) { return is_tcp(s.second.sk) && s.second.sk.state() == kTcpListen; });
  std::set<Connection> waiting_clients;
  if (any_listener) {
    ASSIGN_OR_RETURN(auto diag, inet_diag_dump_all(IPPROTO_TCP));
    for (auto& d : diag) {
      // A connection in an accept queue has no file yet (inode 0); TIME_WAIT
      // ones have none either, and are no connection any more.
      if (d.ino != 0 || (d.state != kTcpEstablished && d.state != kTcpCloseWait)) continue;
      InetEndpoint at = d.local.normalized();
      for (auto& [ino, s] : sockets_) {
        if (!is_tcp(s.sk) || s.sk.state() != kTcpListen || !listener_takes(local_of(s.sk), s.sk.opts().v6only(), at))
          continue;
        Connection conn = make_connection(d.local, d.remote);
        auto client = established.find(conn.reversed());
        uint64_t client_ino = client == established.end() ? 0 : client->second;
        if (client_ino == 0 && !policy_.tcp_drop_pending)
          return failf("{}: a connection from {} waits to be accepted ({}) and its connecting end is "
                       "outside the dumped tree; accept it in the application first, or dump with "
                       "--tcp-drop-pending to drop it", s.what, format_endpoint(conn.remote),
                       format_connection(conn));
        if (client_ino != 0 && policy_.leave_running)
          return failf("{}: the connection {} from {} waits to be accepted, and a --leave-running "
                       "dump cannot carry it (it would take it from the running application); "
                       "accept it in the application first, or dump without --leave-running",
                       s.what, format_connection(conn), sockets_.at(client_ino).what);
        if (client_ino != 0) waiting_clients.insert(conn.reversed());
        pending_.push_back(Pending{ino, conn, client_ino, d.rqueue});
        break;
      }
    }
  }
  for (auto& [conn, ino] : established) {
    if (established.count(conn.reversed()) || waiting_clients.count(conn) || policy_.tcp_established) continue;
    return failf("{}: its peer {} is outside the dumped tree; dump with --tcp-established if that "
                 "peer stays and keeps the connection (it is restored with TCP_REPAIR), or dump the "
                 "tree that holds both ends", sockets_.at(ino).what, format_endpoint(conn.remote));
  }
  return {};
}

Status InetSocketStore::take_pending(std::vector<img::FileEntry>& entries) {
  std::map<uint64_t, img::InetSocketFile*> by_ino;
  for (auto& e : entries)
    if (e.has_inet_sk()) by_ino[e.inet_sk().ino()] = e.mutable_inet_sk();
  std::set<uint64_t> listeners;
  for (auto& p : pending_)
    if (p.client_ino) listeners.insert(p.listener_ino);
  for (uint64_t lino : listeners) {
    Seen& l = sockets_.at(lino);
    uint32_t order = 0;
    size_t wanted = std::count_if(pending_.begin(), pending_.end(),
                                  [&](const Pending& p) { return p.listener_ino == lino && p.client_ino; });
    size_t taken = 0;
    // The listener may be blocking (its file is the application's): poll
    // first, so that accept() never waits.
    for (;;) {
      pollfd pfd{l.copy.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLIN)) break;
      UniqueFd a(::accept4(l.copy.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!a) return failf_errno("{}: accepting the connections that wait in its queue", l.what);
      auto local = sock_endpoint(a.get(), false);
      auto remote = sock_endpoint(a.get(), true);
      if (!local || !remote) continue;  // reset by its peer meanwhile: nothing to carry
      Connection conn = make_connection(*local, *remote);
      auto p = std::find_if(pending_.begin(), pending_.end(),
                            [&](const Pending& q) { return q.listener_ino == lino && q.conn == conn; });
      if (p == pending_.end() || p->client_ino == 0) continue;  // from outside: dropped (closed)
      std::string what = fmt::format("{}: accepted {}", l.what, format_connection(conn));
      // Its end in the tree dies in repair mode; so does this one, silently.
      TRY(tcp_repair_on(a.get(), what));
      ASSIGN_OR_RETURN(TcpReceived received, peek_tcp_recv_queue(a.get(), what));
      auto client = by_ino.find(p->client_ino);
      if (client == by_ino.end())
        return failf("{}: the entry of its connecting end socket:[{}] is missing", what, p->client_ino);
      client->second->set_pending(true);
      client->second->set_pending_order(order++);
      if (client->second->has_tcp())
        drop_received_from_send_queue(*client->second->mutable_tcp(), received.next_seq);
      client->second->set_pending_received(std::move(received.data));
      accepted_.push_back(std::move(a));
      taken++;
    }
    if (taken != wanted)
      return failf("{}: {} connection(s) from the tree waited to be accepted, {} could be taken "
                   "(one was reset meanwhile?); dump again", l.what, wanted, taken);
  }
  return {};
}

uint64_t InetSocketStore::pending_room(const std::vector<img::FileEntry>& entries) const {
  uint64_t room = 0;
  for (auto& p : pending_) {
    if (!p.client_ino) continue;
    room += p.received + 4096;
    for (auto& e : entries)
      if (e.has_inet_sk() && e.inet_sk().ino() == p.client_ino) room += e.inet_sk().tcp().send_queue().size();
  }
  return room;
}

void InetSocketStore::finish(bool killing) {
  if (!killing)
    for (auto& [ino, s] : sockets_)
      if (s.in_repair) {
        // Nothing better to do on failure: the socket stays as it is.
        if (tcp_repair_off(s.copy.get(), s.sk.opts().reuseaddr(), s.what))
          (void)journal_note(fmt::format("tcp-repair-off {}", ino));
        s.in_repair = false;
      }
  sockets_.clear();
  accepted_.clear();
}

// ---- restore ----

namespace {

// Connections in TIME_WAIT on a listener's port, which keep it from being
// bound again: closed ones of the tree's own past (an MPI job's TCP BTL closes
// the redundant one of two crossed connects). A listener whose application
// did not set SO_REUSEADDR has them inherit that (tw_reuse), so no option
// gets past them; they go early instead (SOCK_DESTROY ends a TIME_WAIT socket
// since Linux 4.5). True if any went.
bool end_time_waits_on(const InetEndpoint& local) {
  constexpr int kTimeWait = 6;
  auto all = inet_diag_dump_all(IPPROTO_TCP);
  if (!all) return false;
  bool any = false;
  for (auto& d : *all) {
    if (d.state != kTimeWait || d.local.port != local.port) continue;
    if (!local.is_any() && !(d.local.normalized() == local.normalized())) continue;
    any |= inet_diag_destroy(d).has_value();
  }
  return any;
}

Status bind_to(int fd, const img::InetSocketFile& sk, const std::string& what) {
  sockaddr_storage ss;
  InetEndpoint local = local_of(sk);
  socklen_t len = endpoint_to_sockaddr(local, static_cast<int>(sk.family()), ss);
  int r = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  if (r != 0 && errno == EADDRINUSE && is_tcp(sk) && sk.state() == kTcpListen && end_time_waits_on(local))
    r = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  if (r != 0)
    return failf_errno("{}: bind to {} (is the address in use, or not on this machine?)", what,
                       format_endpoint(local));
  return {};
}

Status connect_to(int fd, const img::InetSocketFile& sk, const std::string& what) {
  sockaddr_storage ss;
  InetEndpoint remote = remote_of(sk);
  socklen_t len = endpoint_to_sockaddr(remote, static_cast<int>(sk.family()), ss);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
    return failf_errno("{}: connect to {}", what, format_endpoint(remote));
  return {};
}

// Restore order: listeners, then every socket that needs none, then the
// connections that wait in a listener's accept queue, in their queue's order.
int phase(const img::InetSocketFile& sk) {
  if (is_tcp(sk) && sk.state() == kTcpListen) return 0;
  if (sk.pending()) return 2;
  return 1;
}

}  // namespace

Status InetSocketRestorer::validate(const std::vector<img::FileEntry>& files) {
  for (auto& f : files) {
    if (!f.has_inet_sk()) continue;
    const img::InetSocketFile& sk = f.inet_sk();
    std::string what = fmt::format("file {}: inet socket socket:[{}]", f.id(), sk.ino());
    if (sk.family() != AF_INET && sk.family() != AF_INET6) return failf("{}: unknown family {}", what, sk.family());
    bool tcp = sk.type() == SOCK_STREAM && sk.protocol() == IPPROTO_TCP;
    bool udp = sk.type() == SOCK_DGRAM && sk.protocol() == IPPROTO_UDP;
    if (!tcp && !udp) return failf("{}: type {} protocol {} is neither TCP nor UDP", what, sk.type(), sk.protocol());
    size_t alen = sk.family() == AF_INET ? 4 : 16;
    if (sk.local_addr().size() != alen || (connected(sk) && sk.remote_addr().size() != alen))
      return failf("{}: addresses of the wrong size for its family", what);
    if (sk.local_port() > 0xffff || sk.remote_port() > 0xffff) return failf("{}: port out of range", what);
    int state = static_cast<int>(sk.state());
    if (tcp && state != kTcpListen && state != kTcpClose && state != kTcpSynSent && !tcp_connected_state(state))
      return failf("{}: TCP state {} cannot be restored", what, tcp_state_name(state));
    if ((tcp_connected_state(state) || (tcp && state == kTcpSynSent)) && !connected(sk))
      return failf("{}: connected without a peer address", what);
    // A connection not yet accepted: its connecting end may have shut down.
    if (sk.pending() && state != kTcpEstablished && (!tcp_fin_sent(state) || tcp_fin_received(state)))
      return failf("{}: a pending connection in state {}", what, tcp_state_name(state));
    if (sk.has_tcp() && sk.tcp().unsent() > sk.tcp().send_queue().size())
      return failf("{}: {} unsent bytes in a send queue of {}", what, sk.tcp().unsent(), sk.tcp().send_queue().size());
    if (tcp && tcp_connected_state(state) && !sk.pending() && !sk.has_tcp())
      return failf("{}: an established connection without its TCP state", what);
    if (tcp && sk.queue_size() > 0) return failf("{}: datagrams queued on a TCP socket", what);
    for (auto& d : sk.queue())
      if ((d.from_addr().size() != 4 && d.from_addr().size() != 16) || d.from_port() > 0xffff)
        return failf("{}: a queued datagram's sender address is malformed", what);
  }
  return {};
}

Result<std::unique_ptr<InetSocketRestorer>> InetSocketRestorer::create_all(
    const std::vector<img::FileEntry>& files, int fd_floor) {
  TRY(validate(files));
  auto r = std::make_unique<InetSocketRestorer>();
  std::vector<const img::InetSocketFile*> all;
  for (auto& f : files)
    if (f.has_inet_sk()) all.push_back(&f.inet_sk());
  // Which sent FINs come back: those of the connections restored here.
  std::set<Connection> fin_senders;
  for (auto* sk : all)
    if (is_tcp(*sk) && !sk->pending() && tcp_fin_sent(static_cast<int>(sk->state())))
      fin_senders.insert(make_connection(local_of(*sk), remote_of(*sk)));
  std::stable_sort(all.begin(), all.end(), [](auto* a, auto* b) {
    return std::pair(phase(*a), a->pending_order()) < std::pair(phase(*b), b->pending_order());
  });
  for (const img::InetSocketFile* skp : all) {
    const img::InetSocketFile& sk = *skp;
    if (r->sockets_.count(sk.ino())) continue;
    std::string what = fmt::format("socket:[{}] ({})", sk.ino(), describe_inet_socket(sk));
    UniqueFd fd(::socket(static_cast<int>(sk.family()), static_cast<int>(sk.type()) | SOCK_CLOEXEC,
                         static_cast<int>(sk.protocol())));
    if (!fd) return failf_errno("{}: socket", what);
    fd = move_fd_above(std::move(fd), fd_floor);
    Made made{sk, std::move(fd), false, {}, false};
    int s = made.fd.get();
    int state = static_cast<int>(sk.state());
    bool repair = is_tcp(sk) && tcp_connected_state(state) && !sk.pending();
    made.plan.state = state;
    made.plan.shutdown = sk.shutdown();
    made.plan.peer_resends_fin =
        fin_senders.count(make_connection(local_of(sk), remote_of(sk)).reversed()) > 0;
    if (repair && !have_cap(cap::kNetAdmin))
      return std::unexpected(Error(
          fmt::format("{}: a TCP connection comes back with TCP_REPAIR, which needs CAP_NET_ADMIN; minicriu "
                      "runs without it: restore it as root", what),
          EPERM));
    if (repair) {
      TRY(tcp_repair_on(s, what));
      made.in_repair = true;
    }
    TRY(set_inet_options(s, sk, repair, what));
    TRY(set_socket_options(s, sk.sockopts(), what));
    InetEndpoint local = local_of(sk);
    if (is_tcp(sk)) {
      switch (sk.state()) {
        case kTcpListen:
          TRY(bind_to(s, sk, what));
          if (::listen(s, static_cast<int>(sk.backlog())) != 0) return failf_errno("{}: listen", what);
          break;
        case kTcpClose:
          if (local.port != 0) TRY(bind_to(s, sk, what));
          break;
        case kTcpSynSent:
          // Its SYN goes out again at resume(), once every socket of the
          // tree exists.
          TRY(bind_to(s, sk, what));
          made.connect_later = true;
          break;
        default:
          TRY(bind_to(s, sk, what));
          if (sk.pending()) {
            // Connected again for real, to the listener made above: the
            // connection waits in its accept queue with what it had received.
            // Nobody reads it before the tree runs: it must fit in the buffers.
            std::string data = sk.pending_received() + sk.tcp().send_queue();
            TRY(make_room(s, SO_SNDBUF, SO_SNDBUFFORCE, data.size(), "SO_SNDBUF", what));
            TRY(connect_to(s, sk, what));
            TRY(send_all(s, data, 5000, what));
            if (tcp_fin_sent(state) && ::shutdown(s, SHUT_WR) != 0)
              return failf_errno("{}: shutdown after its data", what);
          } else {
            TRY(restore_tcp_connection(s, static_cast<int>(sk.family()), remote_of(sk), sk.tcp(), made.plan,
                                       what));
          }
          break;
      }
    } else {
      if (local.port != 0 || !local.is_any()) TRY(bind_to(s, sk, what));
      if (connected(sk)) TRY(connect_to(s, sk, what));
    }
    if (sk.flags() & O_NONBLOCK) {
      if (::fcntl(s, F_SETFL, O_NONBLOCK) != 0) return failf_errno("{}: F_SETFL", what);
    }
    r->sockets_.emplace(sk.ino(), std::move(made));
  }
  // Queued datagrams last: their senders may be sockets of the tree.
  auto senders = [&](const InetEndpoint& from) {
    InetEndpoint want = from.normalized();
    int wildcard = -1;
    for (auto& [ino, m] : r->sockets_) {
      if (is_tcp(m.sk)) continue;
      InetEndpoint local = local_of(m.sk).normalized();
      if (local == want) return m.fd.get();
      if (local.port == want.port && listener_takes(local, m.sk.opts().v6only(), want)) wildcard = m.fd.get();
    }
    return wildcard;
  };
  for (auto& [ino, m] : r->sockets_) {
    std::string what = fmt::format("socket:[{}] ({})", ino, describe_inet_socket(m.sk));
    if (!is_tcp(m.sk) && m.sk.queue_size() > 0) TRY(refill_udp_queue(m.fd.get(), m.sk, senders, what));
    TRY(attach_socket_filter(m.fd.get(), m.sk.sockopts(), what));
  }
  return r;
}

Result<UniqueFd> InetSocketRestorer::open(const img::InetSocketFile& sk) const {
  auto it = sockets_.find(sk.ino());
  if (it == sockets_.end()) return failf("socket:[{}] was not created", sk.ino());
  return dup_description(it->second.fd.get(), socket_link(sk.ino()));
}

Status InetSocketRestorer::resume() {
  for (auto& [ino, m] : sockets_) {
    if (!m.connect_later) continue;
    // A non-blocking connect, as CRIU does: the application finds it
    // connecting (a blocking connect() it was in waits for it again).
    std::string what = fmt::format("socket:[{}] ({})", ino, describe_inet_socket(m.sk));
    int fl = ::fcntl(m.fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(m.fd.get(), F_SETFL, fl | O_NONBLOCK) != 0) return failf_errno("{}: F_SETFL", what);
    sockaddr_storage ss{};
    socklen_t len = endpoint_to_sockaddr(remote_of(m.sk), static_cast<int>(m.sk.family()), ss);
    if (::connect(m.fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)
      return failf_errno("{}: connecting again to {}", what, format_endpoint(remote_of(m.sk)));
    if (::fcntl(m.fd.get(), F_SETFL, fl) != 0) return failf_errno("{}: F_SETFL", what);
    m.connect_later = false;
  }
  for (auto& [ino, m] : sockets_) {
    if (!m.in_repair) continue;
    std::string what = fmt::format("socket:[{}] ({})", ino, describe_inet_socket(m.sk));
    TRY(resume_tcp_connection(m.fd.get(), m.sk.opts().reuseaddr(), m.sk.tcp(), m.plan, what));
    m.in_repair = false;
  }
  return {};
}

namespace {

std::string describe_inet(const img::InetSocketFile& sk) {
  std::string s = fmt::format("{} socket:[{}]", describe_inet_socket(sk), sk.ino());
  if (sk.state() == kTcpListen) s += fmt::format(", backlog {}", sk.backlog());
  if (sk.has_tcp())
    s += fmt::format(", send queue {} byte(s) ({} unsent), receive queue {} byte(s)", sk.tcp().send_queue().size(),
                     sk.tcp().unsent(), sk.tcp().recv_queue().size());
  if (sk.protocol() == IPPROTO_UDP) {
    size_t bytes = 0;
    for (auto& d : sk.queue()) bytes += d.data().size();
    s += fmt::format(", {} datagram(s) of {} byte(s) queued", sk.queue_size(), bytes);
  }
  if (sk.pending())
    s += fmt::format(", waiting to be accepted (#{}) with {} byte(s) received", sk.pending_order(),
                     sk.pending_received().size());
  if (sk.flags() & O_NONBLOCK) s += ", non-blocking";
  if (std::string o = describe_socket_options(sk.sockopts()); !o.empty()) s += ", " + o;
  return s;
}

class InetSocketKind final : public Kind {
 public:
  const char* name() const override { return "inet socket"; }

  Status begin(DumpEnv& env) override {
    store_.emplace(InetDumpPolicy{env.options.tcp_established, env.options.tcp_drop_pending,
                                  env.options.leave_running});
    return {};
  }

  bool takes(const FdDumpInfo& fd) const override {
    if (!S_ISSOCK(fd.st.st_mode) || fd.local_fd < 0) return false;
    int domain = sock_int(fd.local_fd, SOL_SOCKET, SO_DOMAIN, -1);
    return domain == AF_INET || domain == AF_INET6;
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env) override {
    return store_->dump(fd.what, fd.local_fd, fd.st.st_ino, static_cast<int>(fd.fdinfo.flags), &env.tree_tids,
                        env.net_lock, *entry.mutable_inet_sk());
  }

  Status check(const DumpTree&, DumpEnv& env) override {
    TRY(store_->check_peers());
    if (store_->size()) env.log.info("{} inet socket(s), their peers checked", store_->size());
    return {};
  }

  // Sockets left in repair mode die so with the tree (no FIN, no RST), or
  // are taken out of it before the tree runs again.
  void release(TreeFate fate, DumpEnv&) override {
    if (store_) store_->finish(fate == TreeFate::dies);
  }

  // Connections of the tree waiting in a listener's accept queue are
  // accepted (a dump that kills the tree only) to read what they received.
  bool is_destructive() const override { return true; }
  uint64_t destructive_room(const DumpEnv& env) const override { return store_->pending_room(*env.files); }
  Status destructive(DumpEnv& env) override { return store_->take_pending(*env.files); }

  bool owns(const img::FileEntry& entry) const override { return entry.has_inet_sk(); }

  Status load(const RestoreEnv& env) override {
    return with_context(InetSocketRestorer::validate(env.checkpoint.files),
                        fmt::format("{} cannot be restored here", env.dir.path()));
  }

  // Listeners first, then connections (in TCP repair mode until resume()).
  Status create_shared(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_, InetSocketRestorer::create_all(env.checkpoint.files, env.fd_floor));
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    if (!restorer_) return fail("inet sockets were not created for this restore");
    return restorer_->open(entry.inet_sk());
  }

  // Every socket of the tree exists: connections may talk again.
  Status resume(const RestoreEnv&) override {
    TRY(restorer_->resume());
    restorer_.reset();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_inet(f.inet_sk()); }

 private:
  std::optional<InetSocketStore> store_;
  std::unique_ptr<InetSocketRestorer> restorer_;
};

}  // namespace

std::unique_ptr<Kind> make_inet_socket_kind() { return std::make_unique<InetSocketKind>(); }

}  // namespace minicriu
