#include "net/inet_addr.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <unistd.h>

#include <cstring>

#include "net/sock_diag.hpp"

namespace minicriu {

namespace {

constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

std::string InetEndpoint::addr_bytes() const {
  return std::string(reinterpret_cast<const char*>(addr.data()), family == AF_INET ? 4 : 16);
}

InetEndpoint InetEndpoint::normalized() const {
  if (family != AF_INET6 || std::memcmp(addr.data(), kV4MappedPrefix, 12) != 0) return *this;
  InetEndpoint e;
  e.family = AF_INET;
  std::memcpy(e.addr.data(), addr.data() + 12, 4);
  e.port = port;
  return e;
}

bool InetEndpoint::is_any() const {
  size_t n = family == AF_INET ? 4 : 16;
  for (size_t i = 0; i < n; i++)
    if (addr[i] != 0) return false;
  return true;
}

std::string format_endpoint(const InetEndpoint& e) {
  char buf[INET6_ADDRSTRLEN] = "?";
  ::inet_ntop(e.family, e.addr.data(), buf, sizeof buf);
  if (e.family == AF_INET6) return fmt::format("[{}]:{}", buf, e.port);
  return fmt::format("{}:{}", buf, e.port);
}

Result<InetEndpoint> endpoint_from_bytes(const std::string& bytes, uint32_t port) {
  InetEndpoint e;
  if (bytes.size() == 4) e.family = AF_INET;
  else if (bytes.size() == 16) e.family = AF_INET6;
  else return failf("an inet address of {} bytes (4 or 16 expected)", bytes.size());
  if (port > 0xffff) return failf("port {} out of range", port);
  std::memcpy(e.addr.data(), bytes.data(), bytes.size());
  e.port = static_cast<uint16_t>(port);
  return e;
}

InetEndpoint endpoint_from_sockaddr(const sockaddr_storage& ss) {
  InetEndpoint e;
  if (ss.ss_family == AF_INET6) {
    auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    e.family = AF_INET6;
    std::memcpy(e.addr.data(), &s->sin6_addr, 16);
    e.port = ntohs(s->sin6_port);
  } else {
    auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    e.family = AF_INET;
    std::memcpy(e.addr.data(), &s->sin_addr, 4);
    e.port = ntohs(s->sin_port);
  }
  return e;
}

socklen_t endpoint_to_sockaddr(const InetEndpoint& e, int family, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  if (family == AF_INET6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(e.port);
    if (e.family == AF_INET) {
      std::memcpy(&s->sin6_addr, kV4MappedPrefix, 12);
      std::memcpy(reinterpret_cast<uint8_t*>(&s->sin6_addr) + 12, e.addr.data(), 4);
    } else {
      std::memcpy(&s->sin6_addr, e.addr.data(), 16);
    }
    return sizeof(sockaddr_in6);
  }
  auto* s = reinterpret_cast<sockaddr_in*>(&ss);
  s->sin_family = AF_INET;
  s->sin_port = htons(e.port);
  std::memcpy(&s->sin_addr, e.addr.data(), 4);
  return sizeof(sockaddr_in);
}

Connection make_connection(const InetEndpoint& local, const InetEndpoint& remote) {
  return {local.normalized(), remote.normalized()};
}

std::string format_connection(const Connection& c) {
  return fmt::format("{} -> {}", format_endpoint(c.local), format_endpoint(c.remote));
}

std::string tcp_state_name(int state) {
  static const char* const names[] = {"?",         "ESTABLISHED", "SYN_SENT",   "SYN_RECV",
                                      "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",  "CLOSE",
                                      "CLOSE_WAIT", "LAST_ACK",   "LISTEN",     "CLOSING",
                                      "NEW_SYN_RECV", "BOUND_INACTIVE"};
  if (state > 0 && state < static_cast<int>(std::size(names))) return names[state];
  return fmt::format("state-{}", state);
}

Result<std::vector<InetDiag>> inet_diag_dump(int family, int protocol) {
  struct {
    nlmsghdr hdr;
    inet_diag_req_v2 req;
  } rq{};
  rq.hdr.nlmsg_len = sizeof rq;
  rq.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  rq.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  rq.hdr.nlmsg_seq = 1;
  rq.req.sdiag_family = static_cast<uint8_t>(family);
  rq.req.sdiag_protocol = static_cast<uint8_t>(protocol);
  rq.req.idiag_states = ~0u;
  const char* proto = protocol == IPPROTO_TCP ? "tcp" : "udp";
  std::vector<InetDiag> out;
  auto each = [&](const nlmsghdr& h) -> Status {
    auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
    InetDiag d;
    d.family = m->idiag_family;
    d.protocol = protocol;
    d.state = m->idiag_state;
    d.ino = m->idiag_inode;
    d.rqueue = m->idiag_rqueue;
    d.wqueue = m->idiag_wqueue;
    d.local.family = d.remote.family = d.family;
    size_t alen = d.family == AF_INET ? 4 : 16;
    std::memcpy(d.local.addr.data(), m->id.idiag_src, alen);
    std::memcpy(d.remote.addr.data(), m->id.idiag_dst, alen);
    d.local.port = ntohs(m->id.idiag_sport);
    d.remote.port = ntohs(m->id.idiag_dport);
    int alen_left = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *m));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen_left); a = RTA_NEXT(a, alen_left))
      if (a->rta_type == INET_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1)
        d.shutdown = *static_cast<const uint8_t*>(RTA_DATA(a));
    out.push_back(d);
    return {};
  };
  TRY(sock_diag_exchange(rq.hdr, fmt::format("inet ({}{})", proto, family == AF_INET6 ? "6" : ""),
                         fmt::format("inet sock_diag ({}): is the {}_diag module loaded?", proto, proto), each));
  return out;
}

Result<std::vector<InetDiag>> inet_diag_dump_all(int protocol) {
  ASSIGN_OR_RETURN(auto v4, inet_diag_dump(AF_INET, protocol));
  ASSIGN_OR_RETURN(auto v6, inet_diag_dump(AF_INET6, protocol));
  v4.insert(v4.end(), v6.begin(), v6.end());
  return v4;
}

}  // namespace minicriu

namespace minicriu {

Status inet_diag_destroy(const InetDiag& d) {
  struct {
    nlmsghdr hdr;
    inet_diag_req_v2 req;
  } rq{};
  rq.hdr.nlmsg_len = sizeof rq;
  rq.hdr.nlmsg_type = SOCK_DESTROY;
  rq.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  rq.hdr.nlmsg_seq = 1;
  rq.req.sdiag_family = static_cast<uint8_t>(d.family);
  rq.req.sdiag_protocol = IPPROTO_TCP;
  rq.req.idiag_states = 1u << d.state;
  size_t alen = d.family == AF_INET ? 4 : 16;
  std::memcpy(rq.req.id.idiag_src, d.local.addr.data(), alen);
  std::memcpy(rq.req.id.idiag_dst, d.remote.addr.data(), alen);
  rq.req.id.idiag_sport = htons(d.local.port);
  rq.req.id.idiag_dport = htons(d.remote.port);
  rq.req.id.idiag_cookie[0] = rq.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  std::string what = fmt::format("tcp {} -> {}", format_endpoint(d.local), format_endpoint(d.remote));
  return sock_diag_exchange(rq.hdr, what, fmt::format("{}: SOCK_DESTROY", what),
                            [](const nlmsghdr&) { return Status{}; });
}

}  // namespace minicriu
