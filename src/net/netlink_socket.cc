// AF_NETLINK sockets (route, generic, and the other protocols): made again
// with their protocol, bound to the same port id, in the same multicast groups
// (NETLINK_LIST_MEMBERSHIPS, set again with NETLINK_ADD_MEMBERSHIP),
// connected to the same destination, with their NETLINK_* and other options.
// A non-empty queue is refused (messages the kernel sent cannot be sent
// again as the kernel).
#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "images/checkpoint.hpp"
#include "net/lone_socket.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"
#include "net/sockopt.hpp"

namespace minicriu {

namespace {

std::string protocol_name(uint32_t p) {
  switch (p) {
    case NETLINK_ROUTE: return "route";
    case NETLINK_GENERIC: return "generic";
    case NETLINK_SOCK_DIAG: return "sock_diag";
    case NETLINK_NETFILTER: return "netfilter";
    case NETLINK_KOBJECT_UEVENT: return "uevent";
    case NETLINK_AUDIT: return "audit";
    case NETLINK_XFRM: return "xfrm";
    default: return fmt::format("protocol {}", p);
  }
}

std::string describe_netlink(const img::NetlinkSocketFile& sk) {
  std::string out = fmt::format("netlink {} socket:[{}]", protocol_name(sk.protocol()), sk.ino());
  if (sk.portid()) out += fmt::format(" port id {}", sk.portid());
  if (sk.groups_size()) {
    out += " groups";
    for (uint32_t g : sk.groups()) out += fmt::format(" {}", g);
  }
  if (sk.dst_portid() || sk.dst_group()) out += fmt::format(" connected to {}/{}", sk.dst_portid(), sk.dst_group());
  std::string opts = describe_socket_options(sk.sockopts());
  if (!opts.empty()) out += ", " + opts;
  return out;
}

Result<std::vector<uint32_t>> memberships(int fd, const std::string& what) {
  std::vector<uint32_t> words(4);
  socklen_t len = static_cast<socklen_t>(words.size() * sizeof(uint32_t));
  if (::getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words.data(), &len) != 0)
    return failf_errno("{}: NETLINK_LIST_MEMBERSHIPS", what);
  if (len > words.size() * sizeof(uint32_t)) {
    // len is what the whole list needs.
    words.resize((len + sizeof(uint32_t) - 1) / sizeof(uint32_t));
    len = static_cast<socklen_t>(words.size() * sizeof(uint32_t));
    if (::getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words.data(), &len) != 0)
      return failf_errno("{}: NETLINK_LIST_MEMBERSHIPS", what);
  }
  std::vector<uint32_t> groups;
  for (size_t w = 0; w < words.size() && w * sizeof(uint32_t) < len; w++)
    for (uint32_t b = 0; b < 32; b++)
      if (words[w] & (1u << b)) groups.push_back(static_cast<uint32_t>(w * 32 + b + 1));
  return groups;
}

Result<UniqueFd> make_netlink_socket(const img::NetlinkSocketFile& sk) {
  std::string what = describe_netlink(sk);
  UniqueFd fd(::socket(AF_NETLINK, static_cast<int>(sk.type()) | SOCK_CLOEXEC, static_cast<int>(sk.protocol())));
  if (!fd) return failf_errno("{}: socket", what);
  TRY(set_socket_options(fd.get(), sk.sockopts(), what));
  TRY(set_socket_buffer(fd.get(), sk.sndbuf(), SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF", what));
  TRY(set_socket_buffer(fd.get(), sk.rcvbuf(), SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF", what));
  if (sk.portid()) {
    sockaddr_nl nl{};
    nl.nl_family = AF_NETLINK;
    nl.nl_pid = sk.portid();
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&nl), sizeof nl) != 0)
      return failf_errno("{}: bind to port id {} (another socket may hold it now)", what, sk.portid());
  }
  for (uint32_t g : sk.groups()) {
    int group = static_cast<int>(g);
    if (::setsockopt(fd.get(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
      return failf_errno("{}: NETLINK_ADD_MEMBERSHIP {}", what, g);
  }
  if (sk.dst_portid() || sk.dst_group()) {
    sockaddr_nl nl{};
    nl.nl_family = AF_NETLINK;
    nl.nl_pid = sk.dst_portid();
    nl.nl_groups = sk.dst_group() ? 1u << (sk.dst_group() - 1) : 0;
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&nl), sizeof nl) != 0) return failf_errno("{}: connect", what);
  }
  TRY(attach_socket_filter(fd.get(), sk.sockopts(), what));
  if ((sk.flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, O_RDWR | O_NONBLOCK) != 0)
    return failf_errno("{}: F_SETFL", what);
  return fd;
}

class NetlinkSocketKind final : public Kind {
 public:
  const char* name() const override { return "netlink socket"; }

  bool takes(const FdDumpInfo& fd) const override {
    return S_ISSOCK(fd.st.st_mode) && fd.local_fd >= 0 && sock_int(fd.local_fd, SOL_SOCKET, SO_DOMAIN, -1) == AF_NETLINK;
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    img::NetlinkSocketFile& sk = *entry.mutable_netlink_sk();
    int s = fd.local_fd;
    sk.set_ino(fd.st.st_ino);
    sk.set_type(static_cast<uint32_t>(sock_int(s, SOL_SOCKET, SO_TYPE, 0)));
    sk.set_protocol(static_cast<uint32_t>(sock_int(s, SOL_SOCKET, SO_PROTOCOL, 0)));
    std::string what = fmt::format("{}: netlink {} socket:[{}]", fd.what, protocol_name(sk.protocol()), fd.st.st_ino);
    TRY(refuse_queued(s, what, "messages the kernel sent it cannot be sent again as the kernel"));
    sockaddr_nl nl{};
    socklen_t len = sizeof nl;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&nl), &len) != 0) return failf_errno("{}: getsockname", what);
    sk.set_portid(nl.nl_pid);
    ASSIGN_OR_RETURN(auto groups, memberships(s, what));
    for (uint32_t g : groups) sk.add_groups(g);
    sockaddr_nl peer{};
    len = sizeof peer;
    if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
      sk.set_dst_portid(peer.nl_pid);
      // nl_groups of the peer is a mask of the first 32 groups; the group
      // connected to is the lowest bit.
      if (peer.nl_groups) sk.set_dst_group(static_cast<uint32_t>(__builtin_ctz(peer.nl_groups) + 1));
    }
    sk.set_flags(fd.fdinfo.flags & O_NONBLOCK);
    UniqueFd fresh(::socket(AF_NETLINK, static_cast<int>(sk.type()) | SOCK_CLOEXEC, static_cast<int>(sk.protocol())));
    for (auto [opt, set] : {std::pair{SO_SNDBUF, &img::NetlinkSocketFile::set_sndbuf},
                            std::pair{SO_RCVBUF, &img::NetlinkSocketFile::set_rcvbuf}}) {
      int v = sock_int(s, SOL_SOCKET, opt, 0);
      if (!fresh || sock_int(fresh.get(), SOL_SOCKET, opt, 0) != v) (sk.*set)(static_cast<uint32_t>(v));
    }
    return read_socket_options(s, AF_NETLINK, static_cast<int>(sk.type()), static_cast<int>(sk.protocol()), 0, what,
                               *sk.mutable_sockopts());
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_netlink_sk(); }

  Status create_shared(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!f.has_netlink_sk() || made_.has(f.netlink_sk().ino())) continue;
      ASSIGN_OR_RETURN(UniqueFd fd, make_netlink_socket(f.netlink_sk()));
      made_.add(f.netlink_sk().ino(), std::move(fd), env.fd_floor);
    }
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override { return made_.open(entry.netlink_sk().ino()); }

  Status resume(const RestoreEnv&) override {
    made_.clear();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_netlink(f.netlink_sk()); }

 private:
  LoneSockets made_;
};

}  // namespace

std::unique_ptr<Kind> make_netlink_socket_kind() { return std::make_unique<NetlinkSocketKind>(); }

}  // namespace minicriu
