#include "mem/page_protocol.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdlib>
#include <cstring>

namespace minicriu::pagesrv {

std::string Endpoint::str() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Result<Endpoint> parse_endpoint(const std::string& spec, const std::string& option) {
  auto colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size())
    return failf("{} {:?}: expected HOST:PORT (such as 10.0.0.2:27027)", option, spec);
  Endpoint e;
  e.host = spec.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  std::string port = spec.substr(colon + 1);
  char* end = nullptr;
  long v = std::strtol(port.c_str(), &end, 10);
  if (*end || v <= 0 || v > 65535) return failf("{} {:?}: {:?} is not a TCP port (1-65535)", option, spec, port);
  e.port = static_cast<uint16_t>(v);
  return e;
}

namespace {

void set_timeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

// A connect bounded in time: non-blocking, then poll.
Status connect_within(int fd, const sockaddr* sa, socklen_t len, int timeout_ms) {
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int r = ::connect(fd, sa, len);
  if (r != 0 && errno != EINPROGRESS) return fail_errno("connect");
  if (r != 0) {
    pollfd p{fd, POLLOUT, 0};
    int n;
    do n = ::poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n == 0) return fail("connect: no answer", ETIMEDOUT);
    int err = 0;
    socklen_t el = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) return fail("connect", err);
  }
  ::fcntl(fd, F_SETFL, fl);
  return {};
}

}  // namespace

Result<UniqueFd> connect_tcp(const std::string& host, uint16_t port, int timeout_ms) {
  std::string where = Endpoint{host, port}.str();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  if (int r = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list); r != 0)
    return failf("page server {}: cannot resolve {:?}: {}", where, host, ::gai_strerror(r));
  Error last("no address");
  for (addrinfo* a = list; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      last = Error("socket", errno);
      continue;
    }
    if (auto st = connect_within(fd.get(), a->ai_addr, a->ai_addrlen, timeout_ms); !st) {
      last = st.error();
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_timeouts(fd.get(), timeout_ms);
    ::freeaddrinfo(list);
    return fd;
  }
  ::freeaddrinfo(list);
  return std::unexpected(last.context(fmt::format("page server {}: cannot connect (is `minicriu page-server` "
                                                  "running there?)", where)));
}

Status send_all(int fd, const void* buf, size_t len) {
  auto* p = static_cast<const char*>(buf);
  while (len) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(errno == EAGAIN ? "send: the peer takes nothing (timed out)" : "send");
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Status recv_all(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len) {
    ssize_t n = ::recv(fd, p, len, MSG_WAITALL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(errno == EAGAIN ? "receive: the peer sends nothing (timed out)" : "receive");
    if (n == 0) return fail("the connection was closed", ECONNRESET);
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<Reply> recv_reply(int fd) {
  Reply r;
  TRY(recv_all(fd, &r, sizeof(r)));
  if (r.magic != kMagic) return fail("a reply that is not of a minicriu page server");
  if (r.ok) return r;
  if (r.text_len > 4096) return fail("a malformed error reply");
  std::string text(r.text_len, '\0');
  TRY(recv_all(fd, text.data(), text.size()));
  return std::unexpected(Error(text, r.err));
}

Status send_error(int fd, const Error& e) {
  Reply r;
  r.ok = 0;
  r.err = e.err();
  std::string text = e.message().substr(0, 4096);
  r.text_len = static_cast<uint32_t>(text.size());
  TRY(send_all(fd, &r, sizeof(r)));
  return send_all(fd, text.data(), text.size());
}

Status send_ok(int fd, uint64_t bytes) {
  Reply r;
  r.bytes = bytes;
  return send_all(fd, &r, sizeof(r));
}

}  // namespace minicriu::pagesrv
