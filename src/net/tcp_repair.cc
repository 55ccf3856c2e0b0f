#include "net/tcp_repair.hpp"

#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace minicriu {

namespace {

Status set_int(int fd, int level, int opt, int value, const char* name, const std::string& what) {
  if (::setsockopt(fd, level, opt, &value, sizeof value) != 0) return failf_errno("{}: {}", what, name);
  return {};
}

Result<int> get_int(int fd, int level, int opt, const char* name, const std::string& what) {
  int v = 0;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, level, opt, &v, &len) != 0) return failf_errno("{}: {}", what, name);
  return v;
}

Result<int> ioctl_int(int fd, unsigned long req, const char* name, const std::string& what) {
  int v = 0;
  if (::ioctl(fd, req, &v) != 0) return failf_errno("{}: {}", what, name);
  return v;
}

Status select_queue(int fd, int queue, const std::string& what) {
  return set_int(fd, SOL_TCP, TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE", what);
}

// All the bytes of the selected queue from a peek with room for `hint`
// bytes and more (a send queue is copied skb by skb and must fit whole).
Result<std::string> peek_queue(int fd, size_t hint, const char* name, const std::string& what) {
  std::vector<char> buf(hint + 65536);
  ssize_t n;
  do n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) n = 0;
  if (n < 0) return failf_errno("{}: peeking at its {}", what, name);
  return std::string(buf.data(), static_cast<size_t>(n));
}

// An application's SO_PEEK_OFF (TCP has one since Linux 6.10) would make a
// peek start past the head of the receive queue: off while we read, then put
// back.
class NoPeekOffset {
 public:
  explicit NoPeekOffset(int fd) : fd_(fd) {
    socklen_t len = sizeof old_;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old_, &len) != 0) old_ = -1;
    int off = -1;
    if (old_ >= 0) (void)::setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off);
  }
  NoPeekOffset(const NoPeekOffset&) = delete;
  NoPeekOffset& operator=(const NoPeekOffset&) = delete;
  void* operator new(size_t) = delete;
  ~NoPeekOffset() {
    if (old_ >= 0) (void)::setsockopt(fd_, SOL_SOCKET, SO_PEEK_OFF, &old_, sizeof old_);
  }

 private:
  int fd_;
  int old_ = -1;
};

// A queue's bytes and its TCP_QUEUE_SEQ, read together: the receive queue
// may still grow while we read it (the peer's kernel retransmits even when
// its process is frozen), so the sequence number is read before and after.
Status read_queue(int fd, int queue, uint32_t& seq, std::string& data, const std::string& what) {
  const char* name = queue == TCP_RECV_QUEUE ? "receive queue" : "send queue";
  NoPeekOffset no_offset(fd);
  TRY(select_queue(fd, queue, what));
  for (int attempt = 0; attempt < 10; attempt++) {
    ASSIGN_OR_RETURN(int before, get_int(fd, SOL_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", what));
    ASSIGN_OR_RETURN(int size, ioctl_int(fd, queue == TCP_RECV_QUEUE ? SIOCINQ : SIOCOUTQ,
                                         queue == TCP_RECV_QUEUE ? "SIOCINQ" : "SIOCOUTQ", what));
    ASSIGN_OR_RETURN(data, peek_queue(fd, static_cast<size_t>(std::max(size, 0)), name, what));
    ASSIGN_OR_RETURN(int after, get_int(fd, SOL_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", what));
    if (before == after) {
      // A peek stops at an urgent mark: what lies past it would be lost.
      if (queue == TCP_RECV_QUEUE && data.size() != static_cast<size_t>(std::max(size, 0)))
        return failf("{}: only {} of the {} bytes of its {} could be read (urgent data queued?); let "
                     "the application read them before the dump", what, data.size(), size, name);
      seq = static_cast<uint32_t>(after);
      return select_queue(fd, TCP_NO_QUEUE, what);
    }
  }
  return failf("{}: its {} kept changing while it was read; try the dump again", what, name);
}

// Sends data into the selected queue of a socket in repair mode. The kernel
// may take a receive queue in parts (tcp_send_rcvq: one skb at a time).
Status repair_send(int fd, const std::string& data, const char* name, const std::string& what) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return failf_errno("{}: restoring {} bytes of its {} ({} done)", what, data.size(), name, done);
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

// A queue must fit under the socket's buffer: one that had grown by
// autotuning is given room again (this locks the size, as SO_*BUF does).
Status make_room(int fd, int opt, int force, size_t bytes, const char* name, const std::string& what) {
  if (bytes == 0) return {};
  ASSIGN_OR_RETURN(int have, get_int(fd, SOL_SOCKET, opt, name, what));
  size_t want = bytes * 2 + 65536;
  if (static_cast<size_t>(have) >= want) return {};
  int half = static_cast<int>(std::min<size_t>(want, 1u << 30) / 2 + 1);
  if (::setsockopt(fd, SOL_SOCKET, force, &half, sizeof half) != 0 &&
      ::setsockopt(fd, SOL_SOCKET, opt, &half, sizeof half) != 0)
    return failf_errno("{}: {} of {} for a queue of {} bytes", what, name, want, bytes);
  return {};
}

bool tcp_connected_state(int state) {
  return state == kTcpEstablished || tcp_fin_sent(state) || tcp_fin_received(state);
}
bool tcp_fin_sent(int state) {
  return state == kTcpFinWait1 || state == kTcpFinWait2 || state == kTcpLastAck || state == kTcpClosing;
}
bool tcp_fin_received(int state) { return state == kTcpCloseWait || state == kTcpLastAck || state == kTcpClosing; }

Status tcp_repair_on(int fd, const std::string& what) {
  int on = TCP_REPAIR_ON;
  if (::setsockopt(fd, SOL_TCP, TCP_REPAIR, &on, sizeof on) != 0)
    return failf_errno("{}: TCP_REPAIR (needs CAP_NET_ADMIN)", what);
  return {};
}

Status tcp_repair_off(int fd, bool reuseaddr, const std::string& what) {
  TRY(set_int(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "TCP_REPAIR off", what));
  if (reuseaddr) TRY(set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", what));
  return {};
}

Status dump_tcp_connection(int fd, int state, const std::string& what, img::TcpConnection& out) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &len) != 0) return failf_errno("{}: TCP_INFO", what);
  out.set_tcpi_options(ti.tcpi_options);
  if (ti.tcpi_options & TCPI_OPT_WSCALE) {
    out.set_snd_wscale(ti.tcpi_snd_wscale);
    out.set_rcv_wscale(ti.tcpi_rcv_wscale);
  }
  // In repair mode TCP_MAXSEG answers the clamp negotiated at the handshake.
  ASSIGN_OR_RETURN(int mss, get_int(fd, SOL_TCP, TCP_MAXSEG, "TCP_MAXSEG", what));
  out.set_mss_clamp(static_cast<uint32_t>(mss));
  if (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) {
    ASSIGN_OR_RETURN(int ts, get_int(fd, SOL_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP", what));
    out.set_timestamp(static_cast<uint32_t>(ts));
  }
  tcp_repair_window w{};
  len = sizeof w;
  if (::getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &len) != 0)
    return failf_errno("{}: TCP_REPAIR_WINDOW", what);
  out.set_snd_wl1(w.snd_wl1);
  out.set_snd_wnd(w.snd_wnd);
  out.set_max_window(w.max_window);
  out.set_rcv_wnd(w.rcv_wnd);
  out.set_rcv_wup(w.rcv_wup);

  uint32_t seq = 0;
  std::string data;
  TRY(read_queue(fd, TCP_RECV_QUEUE, seq, data, what));
  out.set_recv_seq(seq);
  out.set_recv_queue(std::move(data));
  // The send queue holds what is sent and not acknowledged, then what was
  // never sent (SIOCOUTQNSD); the peek reads both in order.
  TRY(read_queue(fd, TCP_SEND_QUEUE, seq, data, what));
  ASSIGN_OR_RETURN(int unsent, ioctl_int(fd, SIOCOUTQNSD, "SIOCOUTQNSD", what));
  // A FIN counts one in the sequence and no byte in the queue: one not yet
  // sent is the last of what SIOCOUTQNSD counts.
  if (tcp_fin_sent(state) && unsent > 0) unsent--;
  out.set_send_seq(seq);
  out.set_unsent(static_cast<uint32_t>(std::clamp<int64_t>(unsent, 0, static_cast<int64_t>(data.size()))));
  out.set_send_queue(std::move(data));
  return {};
}

Result<TcpReceived> peek_tcp_recv_queue(int fd, const std::string& what) {
  TcpReceived r;
  TRY(read_queue(fd, TCP_RECV_QUEUE, r.next_seq, r.data, what));
  return r;
}

void drop_received_from_send_queue(img::TcpConnection& sender, uint32_t receiver_next_seq) {
  // The send queue starts at the oldest byte not acknowledged; whatever of
  // it the receiver already has (its ACK lost in the lock, or delayed) is
  // before receiver_next_seq. Sequence numbers wrap: unsigned differences.
  uint32_t size = static_cast<uint32_t>(sender.send_queue().size());
  uint32_t start = sender.send_seq() - size;
  uint32_t have = receiver_next_seq - start;
  if (have == 0 || have > size - std::min(size, sender.unsent())) return;
  sender.mutable_send_queue()->erase(0, have);
}

Status restore_tcp_connection(int fd, int family, const InetEndpoint& remote, const img::TcpConnection& c,
                              const TcpRestorePlan& plan, const std::string& what) {
  // The first byte of each queue: the queues are written back after connect().
  // A FIN sent is sent again at the resume: the send sequence stops before
  // it. A FIN received that the peer sends again: likewise. One the peer
  // will not send again stays counted (the bytes before it move up by one:
  // what was received keeps no sequence numbers of its own).
  uint32_t fin_out = tcp_fin_sent(plan.state) ? 1 : 0;
  uint32_t fin_in = tcp_fin_received(plan.state) && plan.peer_resends_fin ? 1 : 0;
  TRY(select_queue(fd, TCP_RECV_QUEUE, what));
  TRY(set_int(fd, SOL_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.recv_seq() - fin_in - c.recv_queue().size()),
              "TCP_QUEUE_SEQ (receive)", what));
  TRY(select_queue(fd, TCP_SEND_QUEUE, what));
  TRY(set_int(fd, SOL_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.send_seq() - fin_out - c.send_queue().size()),
              "TCP_QUEUE_SEQ (send)", what));
  TRY(select_queue(fd, TCP_NO_QUEUE, what));
  sockaddr_storage ss;
  socklen_t sslen = endpoint_to_sockaddr(remote, family, ss);
  // In repair mode connect() makes the socket ESTABLISHED at once (tcp_connect
  // is skipped: no SYN).
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), sslen) != 0)
    return failf_errno("{}: connect in repair mode to {}", what, format_endpoint(remote));

  std::vector<tcp_repair_opt> opts;
  opts.push_back({TCPOPT_MAXSEG, c.mss_clamp()});
  if (c.tcpi_options() & TCPI_OPT_WSCALE)
    opts.push_back({TCPOPT_WINDOW, c.snd_wscale() | (c.rcv_wscale() << 16)});
  if (c.tcpi_options() & TCPI_OPT_SACK) opts.push_back({TCPOPT_SACK_PERMITTED, 0});
  if (c.tcpi_options() & TCPI_OPT_TIMESTAMPS) opts.push_back({TCPOPT_TIMESTAMP, 0});
  if (::setsockopt(fd, SOL_TCP, TCP_REPAIR_OPTIONS, opts.data(),
                   static_cast<socklen_t>(opts.size() * sizeof(tcp_repair_opt))) != 0)
    return failf_errno("{}: TCP_REPAIR_OPTIONS", what);
  if (c.tcpi_options() & TCPI_OPT_TIMESTAMPS)
    TRY(set_int(fd, SOL_TCP, TCP_TIMESTAMP, static_cast<int>(c.timestamp()), "TCP_TIMESTAMP", what));

  TRY(make_room(fd, SO_RCVBUF, SO_RCVBUFFORCE, c.recv_queue().size(), "SO_RCVBUF", what));
  TRY(make_room(fd, SO_SNDBUF, SO_SNDBUFFORCE, c.send_queue().size(), "SO_SNDBUF", what));
  TRY(select_queue(fd, TCP_RECV_QUEUE, what));
  TRY(repair_send(fd, c.recv_queue(), "receive queue", what));
  // What was sent goes back as sent (in flight: retransmitted if the peer
  // does not acknowledge it); the unsent rest waits for the resume.
  size_t sent = c.send_queue().size() - std::min<size_t>(c.unsent(), c.send_queue().size());
  TRY(select_queue(fd, TCP_SEND_QUEUE, what));
  TRY(repair_send(fd, c.send_queue().substr(0, sent), "send queue", what));
  TRY(select_queue(fd, TCP_NO_QUEUE, what));

  // After the queues: the kernel checks the window against rcv_nxt.
  // rcv_wup may not pass rcv_nxt, which stops before a FIN to be taken again.
  tcp_repair_window w{c.snd_wl1(), c.snd_wnd(), c.max_window(), c.rcv_wnd(), c.rcv_wup() - fin_in};
  if (::setsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) != 0)
    return failf_errno("{}: TCP_REPAIR_WINDOW", what);
  return {};
}

Status send_all(int fd, const std::string& data, int timeout_ms, const std::string& what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return failf_errno("{}: sending {} queued bytes ({} done)", what, data.size(), done);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return failf("{}: {} of {} queued bytes could not be sent within {} ms (the peer does not take "
                   "them)", what, data.size() - done, data.size(), timeout_ms);
    pollfd p{fd, POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left.count()));
  }
  return {};
}

Status resume_tcp_connection(int fd, bool reuseaddr, const img::TcpConnection& c, const TcpRestorePlan& plan,
                             const std::string& what) {
  TRY(tcp_repair_off(fd, reuseaddr, what));
  size_t unsent = std::min<size_t>(c.unsent(), c.send_queue().size());
  if (unsent > 0) TRY(send_all(fd, c.send_queue().substr(c.send_queue().size() - unsent), 5000, what));
  // After the data: the FIN goes out (again); a peer that had it already
  // acknowledges it once more.
  if (tcp_fin_sent(plan.state) && ::shutdown(fd, SHUT_WR) != 0)
    return failf_errno("{}: sending its FIN again (shutdown)", what);
  // The end of the stream the application saw, where no FIN will show it:
  // the peer's, not sent again, or the application's own SHUT_RD.
  bool fin_taken_again = tcp_fin_received(plan.state) && plan.peer_resends_fin;
  if ((plan.shutdown & 1) && !fin_taken_again && ::shutdown(fd, SHUT_RD) != 0)
    return failf_errno("{}: shutdown(SHUT_RD)", what);
  return {};
}

}  // namespace minicriu
