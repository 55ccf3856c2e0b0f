#include "net/lone_socket.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <optional>
#include <sstream>

#include "images/checkpoint.hpp"
#include "proc/proc_parse.hpp"
#include "net/inet_addr.hpp"
#include "net/inet_options.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"

namespace minicriu {

Status refuse_queued(int fd, const std::string& what, const std::string& why) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN))
    return failf("{}: data is queued on it, which minicriu cannot put back ({}); let the application "
                 "read it, or dump when it is idle", what, why);
  return {};
}

Result<UniqueFd> LoneSockets::open(uint64_t ino) const {
  auto it = sockets_.find(ino);
  if (it == sockets_.end()) return failf("{} was not created", socket_link(ino));
  return dup_description(it->second.get(), socket_link(ino));
}

namespace {

// What read_inet_options/set_inet_options need of a socket.
img::InetSocketFile as_inet(const img::IpSocketFile& sk) {
  img::InetSocketFile i;
  i.set_family(sk.family());
  i.set_type(sk.type());
  i.set_protocol(sk.protocol());
  *i.mutable_opts() = sk.opts();
  return i;
}

Result<InetEndpoint> endpoint_of(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int r = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
               : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (r != 0) return fail_errno(peer ? "getpeername" : "getsockname");
  return endpoint_from_sockaddr(ss);
}

// A raw or ping socket's connected peer: getpeername tells none (it has no
// port), /proc/net/{raw,raw6,icmp,icmp6} does (rem_address of its inode).
std::optional<InetEndpoint> proc_net_peer(int family, int type, uint64_t ino) {
  std::string name = std::string(type == SOCK_RAW ? "raw" : "icmp") + (family == AF_INET6 ? "6" : "");
  auto text = proc::read_file("/proc/net/" + name);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, txrx, trtm, retr, uid, timeout, inode;
    if (!(f >> sl >> local >> remote >> st >> txrx >> trtm >> retr >> uid >> timeout >> inode)) continue;
    if (std::strtoull(inode.c_str(), nullptr, 10) != ino) continue;
    auto colon = remote.find(':');
    if (colon == std::string::npos) return std::nullopt;
    std::string hex = remote.substr(0, colon);
    InetEndpoint e;
    e.family = family;
    size_t words = family == AF_INET6 ? 4 : 1;
    if (hex.size() != words * 8) return std::nullopt;
    // Each 32-bit word as the kernel printed it from memory (%08X).
    for (size_t w = 0; w < words; w++) {
      uint32_t v = static_cast<uint32_t>(std::strtoul(hex.substr(w * 8, 8).c_str(), nullptr, 16));
      std::memcpy(e.addr.data() + w * 4, &v, 4);
    }
    e.port = static_cast<uint16_t>(std::strtoul(remote.substr(colon + 1).c_str(), nullptr, 16));
    if (e.is_any()) return std::nullopt;
    return e;
  }
  return std::nullopt;
}

int int_opt(int fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, level, name, &v, &len) == 0 ? v : -1;
}

}  // namespace

Status dump_ip_socket(const std::string& what, int local_fd, uint64_t ino, int flags, img::IpSocketFile& out) {
  out.set_ino(ino);
  out.set_family(static_cast<uint32_t>(int_opt(local_fd, SOL_SOCKET, SO_DOMAIN)));
  out.set_type(static_cast<uint32_t>(int_opt(local_fd, SOL_SOCKET, SO_TYPE)));
  out.set_protocol(static_cast<uint32_t>(int_opt(local_fd, SOL_SOCKET, SO_PROTOCOL)));
  out.set_flags(static_cast<uint32_t>(flags & O_NONBLOCK));
  ASSIGN_OR_RETURN(InetEndpoint local, with_context(endpoint_of(local_fd, false), what));
  if (!local.is_any() || local.port != 0) {
    out.set_local_addr(local.addr_bytes());
    out.set_local_port(local.port);
  }
  auto remote = endpoint_of(local_fd, true);
  if (!remote && remote.error().err() != ENOTCONN) return std::unexpected(with_context(remote, what).error());
  if (!remote && (out.type() == SOCK_RAW || out.protocol() == IPPROTO_ICMP || out.protocol() == IPPROTO_ICMPV6))
    if (auto peer = proc_net_peer(static_cast<int>(out.family()), static_cast<int>(out.type()), ino)) remote = *peer;
  // A raw socket "connected" to the wildcard is not connected.
  if (remote && !(remote->is_any() && remote->port == 0)) {
    out.set_remote_addr(remote->addr_bytes());
    out.set_remote_port(remote->port);
  }
  img::InetSocketFile i = as_inet(out);
  read_inet_options(local_fd, i, *out.mutable_opts());
  TRY(read_socket_options(local_fd, static_cast<int>(out.family()), static_cast<int>(out.type()),
                          static_cast<int>(out.protocol()), 0, what, *out.mutable_sockopts()));
  return {};
}

Result<UniqueFd> make_ip_socket(const img::IpSocketFile& sk, const std::string& what) {
  int family = static_cast<int>(sk.family());
  if (family != AF_INET && family != AF_INET6) return failf("{}: family {} is not an IP family", what, family);
  UniqueFd fd(::socket(family, static_cast<int>(sk.type()) | SOCK_CLOEXEC, static_cast<int>(sk.protocol())));
  if (!fd) return failf_errno("{}: socket", what);
  TRY(set_inet_options(fd.get(), as_inet(sk), false, what));
  TRY(set_socket_options(fd.get(), sk.sockopts(), what));
  if (!sk.local_addr().empty()) {
    ASSIGN_OR_RETURN(InetEndpoint e, with_context(endpoint_from_bytes(sk.local_addr(), sk.local_port()), what));
    sockaddr_storage ss{};
    socklen_t len = endpoint_to_sockaddr(e, family, ss);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return failf_errno("{}: bind to {}", what, format_endpoint(e));
  }
  if (!sk.remote_addr().empty()) {
    ASSIGN_OR_RETURN(InetEndpoint e, with_context(endpoint_from_bytes(sk.remote_addr(), sk.remote_port()), what));
    sockaddr_storage ss{};
    socklen_t len = endpoint_to_sockaddr(e, family, ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return failf_errno("{}: connect to {}", what, format_endpoint(e));
  }
  TRY(attach_socket_filter(fd.get(), sk.sockopts(), what));
  if ((sk.flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, O_RDWR | O_NONBLOCK) != 0)
    return failf_errno("{}: F_SETFL", what);
  return fd;
}

std::string describe_ip_socket(const char* kind, const img::IpSocketFile& sk) {
  std::string out = fmt::format("{}{} socket:[{}] protocol {}", kind, sk.family() == AF_INET6 ? "6" : "", sk.ino(),
                                sk.protocol());
  auto ep = [](const std::string& a, uint32_t port) {
    auto e = endpoint_from_bytes(a, port);
    return e ? format_endpoint(*e) : std::string("?");
  };
  if (!sk.local_addr().empty()) out += " bound " + ep(sk.local_addr(), sk.local_port());
  if (!sk.remote_addr().empty()) out += " connected to " + ep(sk.remote_addr(), sk.remote_port());
  std::string opts = describe_socket_options(sk.sockopts());
  if (!opts.empty()) out += ", " + opts;
  return out;
}

namespace {

class IpSocketKind final : public Kind {
 public:
  explicit IpSocketKind(const IpKindSpec& spec) : spec_(spec) {}
  const char* name() const override { return spec_.name; }

  bool takes(const FdDumpInfo& fd) const override {
    if (!S_ISSOCK(fd.st.st_mode) || fd.local_fd < 0) return false;
    return spec_.is(int_opt(fd.local_fd, SOL_SOCKET, SO_DOMAIN), int_opt(fd.local_fd, SOL_SOCKET, SO_TYPE),
                    int_opt(fd.local_fd, SOL_SOCKET, SO_PROTOCOL));
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    img::IpSocketFile& sk = *spec_.mutable_get(entry);
    std::string what = fmt::format("{}: {} socket:[{}]", fd.what, spec_.name, fd.st.st_ino);
    TRY(refuse_queued(fd.local_fd, what, spec_.queue_why));
    return dump_ip_socket(what, fd.local_fd, fd.st.st_ino, static_cast<int>(fd.fdinfo.flags), sk);
  }

  bool owns(const img::FileEntry& entry) const override { return spec_.has(entry); }

  Status create_shared(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!spec_.has(f) || made_.has(spec_.get(f).ino())) continue;
      const img::IpSocketFile& sk = spec_.get(f);
      ASSIGN_OR_RETURN(UniqueFd fd, make_ip_socket(sk, fmt::format("{} {}", spec_.name, socket_link(sk.ino()))));
      made_.add(sk.ino(), std::move(fd), env.fd_floor);
    }
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override { return made_.open(spec_.get(entry).ino()); }

  Status resume(const RestoreEnv&) override {
    made_.clear();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_ip_socket(spec_.word, spec_.get(f)); }

 private:
  IpKindSpec spec_;
  LoneSockets made_;
};

}  // namespace

std::unique_ptr<Kind> make_ip_socket_kind(const IpKindSpec& spec) { return std::make_unique<IpSocketKind>(spec); }

}  // namespace minicriu
