// AF_PACKET sockets: made again with their type and protocol, bound to the
// same interface (found again by its name), with their PACKET_* and other
// options and their classic filter (net/socket_options.cc). Refused at dump,
// each in one line: a ring (PACKET_RX_RING/TX_RING: its mapping and frames
// are the kernel's), a fanout group, multicast/promiscuous memberships, and
// a non-empty queue (received frames cannot be received again). sock_diag
// (packet_diag) tells of rings, fanout and memberships.
#include <fcntl.h>
#include <net/if.h>  // before the <linux/*.h> that include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/packet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "images/checkpoint.hpp"
#include "net/lone_socket.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"
#include "net/sockopt.hpp"

namespace minicriu {

namespace {

// What packet_diag says of the socket: which refused parts it has.
struct PacketDiag {
  bool found = false;
  bool rx_ring = false, tx_ring = false, fanout = false;
  int memberships = 0;
};

Result<PacketDiag> packet_diag(uint64_t ino, const std::string& what) {
  struct {
    nlmsghdr hdr;
    packet_diag_req req;
  } rq{};
  rq.hdr.nlmsg_len = sizeof rq;
  rq.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  rq.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  rq.hdr.nlmsg_seq = 1;
  rq.req.sdiag_family = AF_PACKET;
  rq.req.pdiag_show = PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG | PACKET_SHOW_FANOUT;
  PacketDiag d;
  TRY(sock_diag_exchange(rq.hdr, what, fmt::format("{}: sock_diag knows no packet sockets (packet_diag)", what),
                         [&](const nlmsghdr& h) -> Status {
                           auto* m = static_cast<const packet_diag_msg*>(NLMSG_DATA(&h));
                           if (m->pdiag_ino != ino) return {};
                           d.found = true;
                           int len = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *m));
                           for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, len);
                                a = RTA_NEXT(a, len)) {
                             switch (a->rta_type) {
                               case PACKET_DIAG_RX_RING: d.rx_ring = true; break;
                               case PACKET_DIAG_TX_RING: d.tx_ring = true; break;
                               case PACKET_DIAG_FANOUT: d.fanout = true; break;
                               case PACKET_DIAG_MCLIST:
                                 d.memberships += static_cast<int>(RTA_PAYLOAD(a) / sizeof(packet_diag_mclist));
                                 break;
                               default: break;
                             }
                           }
                           return {};
                         }));
  return d;
}

std::string describe_packet(const img::PacketSocketFile& sk) {
  std::string type = sk.type() == SOCK_RAW ? "raw" : sk.type() == SOCK_DGRAM ? "dgram" : std::to_string(sk.type());
  std::string out = fmt::format("packet {} socket:[{}] protocol 0x{:04x}", type, sk.ino(), sk.protocol());
  if (sk.ifindex()) out += fmt::format(" bound to {} (ifindex {})", sk.ifname(), sk.ifindex());
  std::string opts = describe_socket_options(sk.sockopts());
  if (!opts.empty()) out += ", " + opts;
  return out;
}

Result<UniqueFd> make_packet_socket(const img::PacketSocketFile& sk) {
  std::string what = describe_packet(sk);
  UniqueFd fd(::socket(AF_PACKET, static_cast<int>(sk.type()) | SOCK_CLOEXEC, htons(static_cast<uint16_t>(sk.protocol()))));
  if (!fd) return failf_errno("{}: socket", what);
  TRY(set_socket_options(fd.get(), sk.sockopts(), what));
  TRY(set_socket_buffer(fd.get(), sk.sndbuf(), SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF", what));
  TRY(set_socket_buffer(fd.get(), sk.rcvbuf(), SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF", what));
  if (sk.ifindex()) {
    // The interface by its name: an index is a number of this boot.
    unsigned index = sk.ifname().empty() ? 0 : ::if_nametoindex(sk.ifname().c_str());
    if (index == 0)
      return failf("{}: there is no interface {} here to bind it to; restore where it exists", what, sk.ifname());
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_protocol = htons(static_cast<uint16_t>(sk.protocol()));
    ll.sll_ifindex = static_cast<int>(index);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0)
      return failf_errno("{}: bind to {}", what, sk.ifname());
  }
  TRY(attach_socket_filter(fd.get(), sk.sockopts(), what));
  if ((sk.flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, O_RDWR | O_NONBLOCK) != 0)
    return failf_errno("{}: F_SETFL", what);
  return fd;
}

class PacketSocketKind final : public Kind {
 public:
  const char* name() const override { return "packet socket"; }

  bool takes(const FdDumpInfo& fd) const override {
    return S_ISSOCK(fd.st.st_mode) && fd.local_fd >= 0 && sock_int(fd.local_fd, SOL_SOCKET, SO_DOMAIN, -1) == AF_PACKET;
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    img::PacketSocketFile& sk = *entry.mutable_packet_sk();
    int s = fd.local_fd;
    std::string what = fmt::format("{}: packet socket:[{}]", fd.what, fd.st.st_ino);
    ASSIGN_OR_RETURN(PacketDiag d, packet_diag(fd.st.st_ino, what));
    if (!d.found) return failf("{}: sock_diag does not know it (is it in another network namespace?)", what);
    if (d.rx_ring || d.tx_ring)
      return failf("{} has a {} ring (PACKET_{}_RING), whose mapping and frames minicriu cannot carry; "
                   "close the socket before the dump", what, d.rx_ring ? "receive" : "transmit",
                   d.rx_ring ? "RX" : "TX");
    if (d.fanout)
      return failf("{} is in a fanout group (PACKET_FANOUT), which minicriu cannot carry; leave it before the dump",
                   what);
    if (d.memberships)
      return failf("{} has {} membership(s) (PACKET_ADD_MEMBERSHIP), which minicriu cannot carry yet; drop "
                   "them before the dump", what, d.memberships);
    TRY(refuse_queued(s, what, "frames a packet socket received cannot be received again"));
    sockaddr_ll ll{};
    socklen_t len = sizeof ll;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&ll), &len) != 0) return failf_errno("{}: getsockname", what);
    sk.set_ino(fd.st.st_ino);
    sk.set_type(static_cast<uint32_t>(sock_int(s, SOL_SOCKET, SO_TYPE, 0)));
    sk.set_protocol(ntohs(ll.sll_protocol));
    sk.set_ifindex(ll.sll_ifindex);
    if (ll.sll_ifindex) {
      char name[IF_NAMESIZE] = {};
      if (!::if_indextoname(static_cast<unsigned>(ll.sll_ifindex), name))
        return failf_errno("{}: the name of its interface {}", what, ll.sll_ifindex);
      sk.set_ifname(name);
    }
    sk.set_flags(fd.fdinfo.flags & O_NONBLOCK);
    // Buffers only where they differ from a new socket's.
    UniqueFd fresh(::socket(AF_PACKET, static_cast<int>(sk.type()) | SOCK_CLOEXEC, 0));
    for (auto [opt, set] : {std::pair{SO_SNDBUF, &img::PacketSocketFile::set_sndbuf},
                            std::pair{SO_RCVBUF, &img::PacketSocketFile::set_rcvbuf}}) {
      int v = sock_int(s, SOL_SOCKET, opt, 0);
      if (!fresh || sock_int(fresh.get(), SOL_SOCKET, opt, 0) != v) (sk.*set)(static_cast<uint32_t>(v));
    }
    return read_socket_options(s, AF_PACKET, static_cast<int>(sk.type()), 0, 0, what, *sk.mutable_sockopts());
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_packet_sk(); }

  Status create_shared(const RestoreEnv& env) override {
    for (auto& f : env.checkpoint.files) {
      if (!f.has_packet_sk() || made_.has(f.packet_sk().ino())) continue;
      ASSIGN_OR_RETURN(UniqueFd fd, make_packet_socket(f.packet_sk()));
      made_.add(f.packet_sk().ino(), std::move(fd), env.fd_floor);
    }
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override { return made_.open(entry.packet_sk().ino()); }

  Status resume(const RestoreEnv&) override {
    made_.clear();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_packet(f.packet_sk()); }

 private:
  LoneSockets made_;
};

}  // namespace

std::unique_ptr<Kind> make_packet_socket_kind() { return std::make_unique<PacketSocketKind>(); }

}  // namespace minicriu
