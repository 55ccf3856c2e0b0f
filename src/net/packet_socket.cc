// AF_PACKET sockets: made again with their type and protocol, bound to the
// same interface (found again by its name), with their PACKET_* and other
// options and their classic filter (net/socket_options.cc), their rings
// (net/packet_ring.cc: the mapping of the socket comes back at its address,
// the frames the application held with it), their memberships and their
// fanout group. sock_diag (packet_diag) tells of rings, fanout and
// memberships. Refused at dump, each in one line: a non-empty queue of a
// socket without a receive ring (received frames cannot be received again),
// a fanout group with a member outside the tree or a BPF program, a mapping
// of a socket no fd of the tree holds, and what packet_ring.cc refuses.
#include <fcntl.h>
#include <net/if.h>  // before the <linux/*.h> that include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/packet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <map>

#include "images/checkpoint.hpp"
#include "mem/vma.hpp"
#include "net/lone_socket.hpp"
#include "net/packet_ring.hpp"
#include "net/sock_diag.hpp"
#include "net/socket_options.hpp"
#include "net/sockopt.hpp"

namespace minicriu {

namespace {

// What packet_diag says of one packet socket.
struct PacketDiag {
  uint32_t ino = 0;
  bool rx = false, tx = false;
  packet_diag_ring rx_ring{}, tx_ring{};
  bool in_fanout = false;
  uint32_t fanout = 0;  // id | type << 16 (no flags: getsockopt has them)
  std::vector<packet_diag_mclist> mclist;
};

// Every packet socket of this network namespace.
Result<std::vector<PacketDiag>> packet_diag_all(const std::string& what) {
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
  std::vector<PacketDiag> all;
  TRY(sock_diag_exchange(rq.hdr, what, fmt::format("{}: sock_diag knows no packet sockets (packet_diag)", what),
                         [&](const nlmsghdr& h) -> Status {
                           if (h.nlmsg_len < NLMSG_LENGTH(sizeof(packet_diag_msg))) return {};
                           auto* m = static_cast<const packet_diag_msg*>(NLMSG_DATA(&h));
                           PacketDiag d;
                           d.ino = m->pdiag_ino;
                           int len = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *m));
                           for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, len);
                                a = RTA_NEXT(a, len)) {
                             const void* data = RTA_DATA(a);
                             size_t n = RTA_PAYLOAD(a);
                             switch (a->rta_type) {
                               case PACKET_DIAG_RX_RING:
                               case PACKET_DIAG_TX_RING: {
                                 bool rx = a->rta_type == PACKET_DIAG_RX_RING;
                                 (rx ? d.rx : d.tx) = true;
                                 std::memcpy(rx ? &d.rx_ring : &d.tx_ring, data,
                                             std::min(n, sizeof(packet_diag_ring)));
                                 break;
                               }
                               case PACKET_DIAG_FANOUT:
                                 d.in_fanout = true;
                                 std::memcpy(&d.fanout, data, std::min(n, sizeof d.fanout));
                                 break;
                               case PACKET_DIAG_MCLIST:
                                 for (size_t off = 0; off + sizeof(packet_diag_mclist) <= n;
                                      off += sizeof(packet_diag_mclist)) {
                                   packet_diag_mclist mc;
                                   std::memcpy(&mc, static_cast<const char*>(data) + off, sizeof mc);
                                   d.mclist.push_back(mc);
                                 }
                                 break;
                               default: break;
                             }
                           }
                           all.push_back(std::move(d));
                           return {};
                         }));
  return all;
}

Result<PacketDiag> packet_diag(uint64_t ino, const std::string& what) {
  ASSIGN_OR_RETURN(auto all, packet_diag_all(what));
  for (auto& d : all)
    if (d.ino == ino) return d;
  return failf("{}: sock_diag does not know it (is it in another network namespace?)", what);
}

void ring_from_diag(const packet_diag_ring& d, img::PacketRing& r) {
  r.set_block_size(d.pdr_block_size);
  r.set_block_nr(d.pdr_block_nr);
  r.set_frame_size(d.pdr_frame_size);
  r.set_frame_nr(d.pdr_frame_nr);
  r.set_retire_tmo(d.pdr_retire_tmo);
  r.set_sizeof_priv(d.pdr_sizeof_priv);
  r.set_features(d.pdr_features);
}

std::string if_name(int index) {
  char name[IF_NAMESIZE] = {};
  return index > 0 && ::if_indextoname(static_cast<unsigned>(index), name) ? std::string(name) : std::string();
}

const char* version_name(uint32_t v) { return v == TPACKET_V1 ? "V1" : v == TPACKET_V2 ? "V2" : "V3"; }

std::string describe_ring(const char* name, const img::PacketRing& r) {
  std::string out = fmt::format("{} ring {}x{} bytes, {} frames of {}", name, r.block_nr(), r.block_size(),
                                r.frame_nr(), r.frame_size());
  if (!std::string_view(name).starts_with("tx"))
    out += fmt::format(", kernel at {}, {} kept", r.head(), r.slots_size());
  return out;
}

std::string describe_packet(const img::PacketSocketFile& sk) {
  std::string type = sk.type() == SOCK_RAW ? "raw" : sk.type() == SOCK_DGRAM ? "dgram" : std::to_string(sk.type());
  std::string out = fmt::format("packet {} socket:[{}] protocol 0x{:04x}", type, sk.ino(), sk.protocol());
  if (sk.ifindex()) out += fmt::format(" bound to {} (ifindex {})", sk.ifname(), sk.ifindex());
  if (sk.has_rx_ring() || sk.has_tx_ring()) out += fmt::format(", TPACKET_{}", version_name(sk.tpacket_version()));
  if (sk.has_rx_ring()) out += ", " + describe_ring("rx", sk.rx_ring());
  if (sk.has_tx_ring()) out += ", " + describe_ring("tx", sk.tx_ring());
  if (sk.fanout())
    out += fmt::format(", fanout group {:#x} type {} flags {:#x}", sk.fanout() & 0xffff, (sk.fanout() >> 16) & 0xff,
                       sk.fanout() >> 24);
  for (auto& m : sk.memberships())
    out += fmt::format(", membership type {} on {} x{}", m.type(), m.ifname(), m.count());
  std::string opts = describe_socket_options(sk.sockopts());
  if (!opts.empty()) out += ", " + opts;
  return out;
}

// The socket before its fanout group and memberships: made unbound, its
// options (PACKET_VERSION and PACKET_RESERVE first), its rings, their
// frames, then bound where it was and its filter attached.
Result<UniqueFd> make_packet_socket(const img::PacketSocketFile& sk) {
  std::string what = describe_packet(sk);
  UniqueFd fd(::socket(AF_PACKET, static_cast<int>(sk.type()) | SOCK_CLOEXEC, 0));
  if (!fd) return failf_errno("{}: socket", what);
  TRY(set_socket_options(fd.get(), sk.sockopts(), what));
  TRY(set_socket_buffer(fd.get(), sk.sndbuf(), SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF", what));
  TRY(set_socket_buffer(fd.get(), sk.rcvbuf(), SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF", what));
  if (sk.has_rx_ring() || sk.has_tx_ring()) {
    int v = static_cast<int>(sk.tpacket_version());
    if (sock_int(fd.get(), SOL_PACKET, PACKET_VERSION, -1) != v &&
        ::setsockopt(fd.get(), SOL_PACKET, PACKET_VERSION, &v, sizeof v) != 0)
      return failf_errno("{}: PACKET_VERSION {}", what, sk.tpacket_version());
    TRY(set_packet_rings(fd.get(), sk, what));
    TRY(refill_packet_rings(fd.get(), sk, what));
  }
  bool fed = sk.has_rx_ring() && sk.rx_ring().head() != 0;
  if (fed && sk.protocol() == 0)
    return failf("{}: a ring the kernel filled on a socket that receives no protocol", what);
  if (sk.ifindex() || sk.protocol()) {
    unsigned index = 0;
    if (sk.ifindex()) {
      // The interface by its name: an index is a number of this boot.
      index = sk.ifname().empty() ? 0 : ::if_nametoindex(sk.ifname().c_str());
      if (index == 0)
        return failf("{}: there is no interface {} here to bind it to; restore where it exists", what, sk.ifname());
    }
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_protocol = htons(static_cast<uint16_t>(sk.protocol()));
    ll.sll_ifindex = static_cast<int>(index);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0)
      return failf_errno("{}: bind to {}", what, sk.ifindex() ? sk.ifname() : std::string("every interface"));
  }
  TRY(attach_socket_filter(fd.get(), sk.sockopts(), what));
  if ((sk.flags() & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, O_RDWR | O_NONBLOCK) != 0)
    return failf_errno("{}: F_SETFL", what);
  return fd;
}

Status add_memberships(int fd, const img::PacketSocketFile& sk, const std::string& what) {
  for (auto& m : sk.memberships()) {
    packet_mreq mr{};
    mr.mr_ifindex = static_cast<int>(m.ifname().empty() ? 0 : ::if_nametoindex(m.ifname().c_str()));
    if (mr.mr_ifindex == 0)
      return failf("{}: there is no interface {} here for its membership; restore where it exists", what,
                   m.ifname());
    mr.mr_type = static_cast<unsigned short>(m.type());
    mr.mr_alen = static_cast<unsigned short>(m.addr().size());
    std::memcpy(mr.mr_address, m.addr().data(), std::min(m.addr().size(), sizeof mr.mr_address));
    for (uint32_t i = 0; i < m.count(); i++)
      if (::setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0)
        return failf_errno("{}: PACKET_ADD_MEMBERSHIP type {} on {}", what, m.type(), m.ifname());
  }
  return {};
}

struct RingMapping {
  pid_t pid;
  uint64_t start, end, ino;
};

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
    sk.set_ino(fd.st.st_ino);
    sk.set_type(static_cast<uint32_t>(sock_int(s, SOL_SOCKET, SO_TYPE, 0)));
    if (d.rx || d.tx) {
      sk.set_tpacket_version(static_cast<uint32_t>(sock_int(s, SOL_PACKET, PACKET_VERSION, 0)));
      if (d.rx) ring_from_diag(d.rx_ring, *sk.mutable_rx_ring());
      if (d.tx) ring_from_diag(d.tx_ring, *sk.mutable_tx_ring());
      TRY(read_packet_rings(s, sk, what));
    }
    if (d.in_fanout) {
      uint32_t f = static_cast<uint32_t>(sock_int(s, SOL_PACKET, PACKET_FANOUT, 0));
      uint32_t type = (f >> 16) & 0xff;
      if (type == PACKET_FANOUT_CBPF || type == PACKET_FANOUT_EBPF)
        return failf("{} is in a fanout group ({:#x}) that steers frames with a BPF program (PACKET_FANOUT_{}), "
                     "which cannot be read back; use another fanout mode", what, f & 0xffff,
                     type == PACKET_FANOUT_CBPF ? "CBPF" : "EBPF");
      // A group's id is kept: UNIQUEID only asked the kernel to choose it.
      sk.set_fanout(f & ~(uint32_t{PACKET_FANOUT_FLAG_UNIQUEID} << 16));
      fanout_[fd.st.st_ino] = f & 0xffff;
    }
    for (auto& mc : d.mclist) {
      if (mc.pdmc_alen > sizeof(packet_mreq::mr_address))
        return failf("{}: a membership with a {}-byte address, longer than PACKET_ADD_MEMBERSHIP takes", what,
                     mc.pdmc_alen);
      img::PacketMembership& m = *sk.add_memberships();
      m.set_ifindex(static_cast<int32_t>(mc.pdmc_index));
      m.set_ifname(if_name(static_cast<int>(mc.pdmc_index)));
      if (m.ifname().empty())
        return failf_errno("{}: the name of the interface {} of a membership", what, mc.pdmc_index);
      m.set_type(mc.pdmc_type);
      m.set_addr(mc.pdmc_addr, mc.pdmc_alen);
      m.set_count(mc.pdmc_count);
    }
    // With a receive ring the frames are in the ring, carried.
    if (!d.rx) TRY(refuse_queued(s, what, "frames a packet socket received cannot be received again"));
    sockaddr_ll ll{};
    socklen_t len = sizeof ll;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&ll), &len) != 0) return failf_errno("{}: getsockname", what);
    sk.set_protocol(ntohs(ll.sll_protocol));
    sk.set_ifindex(ll.sll_ifindex);
    if (ll.sll_ifindex) {
      sk.set_ifname(if_name(ll.sll_ifindex));
      if (sk.ifname().empty()) return failf_errno("{}: the name of its interface {}", what, ll.sll_ifindex);
    }
    sk.set_flags(fd.fdinfo.flags & O_NONBLOCK);
    // Buffers only where they differ from a new socket's.
    UniqueFd fresh(::socket(AF_PACKET, static_cast<int>(sk.type()) | SOCK_CLOEXEC, 0));
    for (auto [opt, set] : {std::pair{SO_SNDBUF, &img::PacketSocketFile::set_sndbuf},
                            std::pair{SO_RCVBUF, &img::PacketSocketFile::set_rcvbuf}}) {
      int v = sock_int(s, SOL_SOCKET, opt, 0);
      if (!fresh || sock_int(fresh.get(), SOL_SOCKET, opt, 0) != v) (sk.*set)(static_cast<uint32_t>(v));
    }
    taken_[fd.st.st_ino] = what;
    return read_socket_options(s, AF_PACKET, static_cast<int>(sk.type()), 0, 0, what, *sk.mutable_sockopts());
  }

  Status take_vma(pid_t pid, VmaInfo& v, DumpEnv&) override {
    if (v.vma.kind() != img::VMA_PACKET_RING) return {};
    if (v.vma.pgoff() != 0)
      return failf("pid {}: mapping {:x}-{:x} ({}) maps a socket's rings from offset {:#x}, not from their start",
                   pid, v.vma.start(), v.vma.end(), v.maps.path, v.vma.pgoff());
    mappings_.push_back({pid, v.vma.start(), v.vma.end(), v.vma.ino()});
    return {};
  }

  Status check(const DumpTree&, DumpEnv& env) override {
    for (auto& m : mappings_) {
      std::string what = fmt::format("pid {}: mapping {:x}-{:x} (socket:[{}])", m.pid, m.start, m.end, m.ino);
      if (!taken_.count(m.ino))
        return failf("{}: a mapping of a socket that is not a packet socket held by an fd of the tree (its fd "
                     "was closed, or it is another kind of socket), which minicriu cannot make again; keep the "
                     "packet socket open, or unmap it before the dump", what);
      const img::PacketSocketFile* sk = find(env, m.ino);
      if (sk && m.end - m.start != packet_rings_size(*sk))
        return failf("{}: maps {} bytes of rings of {} bytes; only a mapping of the whole rings can be made again",
                     what, m.end - m.start, packet_rings_size(*sk));
    }
    if (fanout_.empty()) return {};
    // A group is carried whole: a member outside the tree would be left in
    // a group of its own, or the group would take it back.
    ASSIGN_OR_RETURN(auto all, packet_diag_all("packet fanout groups"));
    for (auto& d : all) {
      if (!d.in_fanout || taken_.count(d.ino)) continue;
      for (auto& [ino, id] : fanout_)
        if ((d.fanout & 0xffff) == id)
          return failf("{} is in fanout group {:#x}, which socket:[{}] outside the tree is in too; a group is "
                       "carried whole only: dump the process that holds it too, or leave the group",
                       taken_[ino], id, d.ino);
    }
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_packet_sk(); }

  Status create_shared(const RestoreEnv& env) override {
    std::vector<const img::PacketSocketFile*> made;
    for (auto& f : env.checkpoint.files) {
      if (!f.has_packet_sk() || made_.has(f.packet_sk().ino())) continue;
      ASSIGN_OR_RETURN(UniqueFd fd, make_packet_socket(f.packet_sk()));
      made_.add(f.packet_sk().ino(), std::move(fd), env.fd_floor);
      made.push_back(&f.packet_sk());
    }
    // Groups in the order of files.img; a group of that id here already
    // (another program's) would take our sockets in.
    std::set<uint32_t> joined;
    for (auto* sk : made) {
      ASSIGN_OR_RETURN(UniqueFd fd, made_.open(sk->ino()));
      std::string what = describe_packet(*sk);
      TRY(add_memberships(fd.get(), *sk, what));
      if (!sk->fanout()) continue;
      uint32_t id = sk->fanout() & 0xffff;
      if (joined.insert(id).second) {
        ASSIGN_OR_RETURN(auto all, packet_diag_all(what));
        for (auto& d : all)
          if (d.in_fanout && (d.fanout & 0xffff) == id)
            return failf("{}: fanout group {:#x} exists here already (socket:[{}]); restore where no other "
                         "program uses that group id", what, id, d.ino);
      }
      int v = static_cast<int>(sk->fanout());
      if (::setsockopt(fd.get(), SOL_PACKET, PACKET_FANOUT, &v, sizeof v) != 0)
        return failf_errno("{}: PACKET_FANOUT {:#x}", what, sk->fanout());
    }
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override { return made_.open(entry.packet_sk().ino()); }

  bool maps(const img::Vma& v) const override { return v.kind() == img::VMA_PACKET_RING; }

  // The rings mapped from the socket made before the tree (its fd is
  // inherited by every task); the restorer blob moves the slot to its place.
  Status map(const img::Vma& v, void* at, int prot) override {
    std::string what = fmt::format("the rings of packet socket:[{}]", v.ino());
    ASSIGN_OR_RETURN(UniqueFd fd, with_context(made_.open(v.ino()), what));
    void* got = ::mmap(at, v.end() - v.start(), prot, MAP_SHARED | MAP_FIXED, fd.get(), 0);
    if (got == MAP_FAILED) return failf_errno("{}: mmap of {} bytes", what, v.end() - v.start());
    return {};
  }

  Status resume(const RestoreEnv&) override {
    made_.clear();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return describe_packet(f.packet_sk()); }

 private:
  static const img::PacketSocketFile* find(const DumpEnv& env, uint64_t ino) {
    if (!env.files) return nullptr;
    for (auto& f : *env.files)
      if (f.has_packet_sk() && f.packet_sk().ino() == ino) return &f.packet_sk();
    return nullptr;
  }

  // dump
  std::map<uint64_t, std::string> taken_;  // ino -> what, for messages
  std::map<uint64_t, uint32_t> fanout_;    // ino -> its group's id
  std::vector<RingMapping> mappings_;
  // restore
  LoneSockets made_;
};

}  // namespace

std::unique_ptr<Kind> make_packet_socket_kind() { return std::make_unique<PacketSocketKind>(); }

}  // namespace minicriu
