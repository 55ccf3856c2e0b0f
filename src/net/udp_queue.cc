#include "net/udp_queue.hpp"

#include <sys/socket.h>

#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

int peek_off(int fd) {
  int v = -1;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &v, &len) != 0) return -1;
  return v;
}

// SO_PEEK_OFF is the application's: whatever we set, we put back.
class PeekOffset {
 public:
  explicit PeekOffset(int fd) : fd_(fd), old_(peek_off(fd)) {}
  PeekOffset(const PeekOffset&) = delete;
  PeekOffset& operator=(const PeekOffset&) = delete;
  void* operator new(size_t) = delete;
  ~PeekOffset() { (void)::setsockopt(fd_, SOL_SOCKET, SO_PEEK_OFF, &old_, sizeof old_); }
  [[nodiscard]] bool start() {
    int zero = 0;
    return ::setsockopt(fd_, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0;
  }

 private:
  int fd_;
  int old_;
};

// A datagram is at most 64 KiB (UDP's length field; GRO may not merge what
// a socket without UDP_GRO receives).
constexpr size_t kMaxDatagram = 65536;

}  // namespace

Result<std::vector<img::UdpDatagram>> peek_udp_queue(int fd, const std::string& what) {
  std::vector<img::UdpDatagram> out;
  PeekOffset guard(fd);
  if (!guard.start()) return failf_errno("{}: SO_PEEK_OFF", what);
  std::vector<char> buf(kMaxDatagram + 1);
  for (;;) {
    sockaddr_storage from{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n;
    do n = ::recvmsg(fd, &msg, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return failf_errno("{}: peeking at its queued datagrams", what);
    if (msg.msg_flags & MSG_TRUNC) return failf("{}: a queued datagram is larger than {} bytes", what, kMaxDatagram);
    // The peek offset does not move past an empty datagram: we would read it forever.
    if (n == 0)
      return failf("{}: an empty datagram is queued on it, which cannot be read without consuming "
                   "it; let the application read it before the dump", what);
    InetEndpoint e = endpoint_from_sockaddr(from);
    img::UdpDatagram d;
    d.set_from_addr(e.addr_bytes());
    d.set_from_port(e.port);
    d.set_data(buf.data(), static_cast<size_t>(n));
    out.push_back(std::move(d));
  }
  return out;
}

namespace {

Result<int> count_queued(int fd, const std::string& what) {
  ASSIGN_OR_RETURN(auto q, peek_udp_queue(fd, what));
  return static_cast<int>(q.size());
}

}  // namespace

Status refill_udp_queue(int to_fd, const img::InetSocketFile& sk, const UdpSenderLookup& senders,
                        const std::string& what) {
  if (sk.queue_size() == 0) return {};
  ASSIGN_OR_RETURN(InetEndpoint to, endpoint_from_bytes(sk.local_addr(), sk.local_port()));
  for (const img::UdpDatagram& d : sk.queue()) {
    ASSIGN_OR_RETURN(InetEndpoint from, with_context(endpoint_from_bytes(d.from_addr(), d.from_port()), what));
    InetEndpoint src = from.normalized();
    int sender = senders(from);
    UniqueFd temp;
    if (sender < 0) {
      temp = UniqueFd(::socket(src.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!temp) return failf_errno("{}: a socket to send its queued datagrams", what);
      sockaddr_storage ss;
      socklen_t len = endpoint_to_sockaddr(src, src.family, ss);
      if (::bind(temp.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return failf_errno("{}: its queued datagram from {} cannot be queued again: binding to {} failed",
                           what, format_endpoint(from), format_endpoint(src));
      sender = temp.get();
    }
    // To the address it was bound to; a wildcard one is reached on loopback.
    InetEndpoint dest = to.normalized();
    if (dest.is_any()) {
      dest = InetEndpoint{};
      dest.family = src.family;
      if (src.family == AF_INET) dest.addr = {127, 0, 0, 1};
      else dest.addr[15] = 1;
      dest.port = to.port;
    }
    int sender_family = 0;
    socklen_t flen = sizeof sender_family;
    ::getsockopt(sender, SOL_SOCKET, SO_DOMAIN, &sender_family, &flen);
    sockaddr_storage ss;
    socklen_t len = endpoint_to_sockaddr(dest, sender_family, ss);
    if (::sendto(sender, d.data().data(), d.data().size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), len) !=
        static_cast<ssize_t>(d.data().size()))
      return failf_errno("{}: queueing its datagram from {} again", what, format_endpoint(from));
  }
  // Loopback delivers at once, or drops (a full receive buffer): count them.
  ASSIGN_OR_RETURN(int queued, count_queued(to_fd, what));
  if (queued != sk.queue_size())
    return failf("{}: {} of its {} queued datagrams could be queued again", what, queued, sk.queue_size());
  return {};
}

}  // namespace minicriu
