#include "net/packet_ring.hpp"

#include <net/if.h>  // before the <linux/*.h> that include <linux/if.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <vector>

#include "base/mapping.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

// The ethertype of the frames a restored ring is fed with (IEEE 802 local
// experimental is 0x88b5/0x88b6; this is a private one of minicriu's, on lo
// only, and a filter on the socket takes only those carrying its cookie).
constexpr uint16_t kFeedProto = 0x4d46;  // "MF"
constexpr uint32_t kMaxV3FeedTmo = 1000;  // ms: a longer retire timeout is refused when a feed is needed

uint64_t frame_offset(const img::PacketRing& r, uint32_t i) {
  uint32_t per_block = r.block_size() / r.frame_size();
  return uint64_t{i / per_block} * r.block_size() + uint64_t{i % per_block} * r.frame_size();
}

uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The status word of a V1/V2 frame (V1: an unsigned long, V2: __u32).
uint64_t frame_status(const uint8_t* f, uint32_t version) {
  if (version == TPACKET_V1) {
    unsigned long v;
    std::memcpy(&v, f, sizeof v);
    return v;
  }
  return load32(f);
}

// When the kernel filled the frame: seconds and the fraction (V1 µs, V2 ns).
std::pair<uint32_t, uint32_t> frame_time(const uint8_t* f, uint32_t version) {
  if (version == TPACKET_V1) {
    tpacket_hdr h;
    std::memcpy(&h, f, sizeof h);
    return {h.tp_sec, h.tp_usec};
  }
  tpacket2_hdr h;
  std::memcpy(&h, f, sizeof h);
  return {h.tp_sec, h.tp_nsec};
}

Status check_layout(const img::PacketRing& r, const std::string& what) {
  if (r.block_size() == 0 || r.block_nr() == 0 || r.frame_size() == 0 || r.frame_size() > r.block_size() ||
      r.block_size() % 4096 || uint64_t{r.block_size() / r.frame_size()} * r.block_nr() < r.frame_nr())
    return failf("{}: a ring of {} blocks of {} bytes, {} frames of {} bytes does not add up", what, r.block_nr(),
                 r.block_size(), r.frame_nr(), r.frame_size());
  return {};
}

void add_slot(img::PacketRing& r, uint32_t index, const uint8_t* p, size_t n) {
  img::PacketRingSlot* s = r.add_slots();
  s->set_index(index);
  s->set_data(p, n);
}

// V1/V2: the frame after the newest one the kernel wrote. The frames the
// application holds run from its next frame to the kernel's, and only one
// such run ends before a frame the kernel owns; without one (all frames or
// none held), the newest time stamp tells.
Status read_rx_frames(const uint8_t* base, img::PacketRing& r, uint32_t version, const std::string& what) {
  uint32_t n = r.frame_nr();
  if (n == 0) return {};
  std::vector<bool> user(n);
  uint32_t held = 0;
  for (uint32_t i = 0; i < n; i++) {
    user[i] = frame_status(base + frame_offset(r, i), version) & TP_STATUS_USER;
    held += user[i];
  }
  uint32_t head = 0, ends = 0;
  for (uint32_t i = 0; i < n && held && held < n; i++)
    if (user[i] && !user[(i + 1) % n]) head = (i + 1) % n, ends++;
  if (ends != 1) {
    head = 0;
    std::pair<uint32_t, uint32_t> newest{0, 0};
    for (uint32_t i = 0; i < n; i++) {
      auto t = frame_time(base + frame_offset(r, i), version);
      if (t > newest || (t == newest && t != std::pair<uint32_t, uint32_t>{0, 0})) newest = t, head = (i + 1) % n;
    }
  }
  r.set_head(head);
  for (uint32_t i = 0; i < n; i++)
    if (i < head || user[i]) add_slot(r, i, base + frame_offset(r, i), r.frame_size());
  (void)what;
  return {};
}

struct BlockHeader {
  uint32_t status = 0, num_pkts = 0;
  uint64_t seq = 0;
};

BlockHeader block_header(const uint8_t* b) {
  tpacket_block_desc d;
  std::memcpy(&d, b, sizeof d);
  return {d.hdr.bh1.block_status, d.hdr.bh1.num_pkts, d.hdr.bh1.seq_num};
}

// V3: the kernel fills the block it opened last (the highest sequence
// number) until it is full or its retire timeout passes; what it holds then
// is not the application's yet, and the kernel's offset in it cannot be set.
Status read_rx_blocks(const uint8_t* base, img::PacketRing& r, const std::string& what, bool& busy) {
  uint32_t n = r.block_nr();
  uint32_t active = 0;
  uint64_t top = 0;
  for (uint32_t i = 0; i < n; i++) {
    BlockHeader h = block_header(base + uint64_t{i} * r.block_size());
    if (h.seq > top) top = h.seq, active = i;
  }
  BlockHeader a = block_header(base + uint64_t{active} * r.block_size());
  uint32_t head = active;
  busy = false;
  if (a.status & TP_STATUS_USER) {
    head = (active + 1) % n;
    if (block_header(base + uint64_t{head} * r.block_size()).status & TP_STATUS_USER)
      return failf("{}: every block of its TPACKET_V3 receive ring is the application's (the kernel stopped "
                   "filling it), and the kernel's place in it cannot be carried; release a block before the dump",
                   what);
  } else if (a.num_pkts) {
    busy = true;
    return failf("{}: block {} of its TPACKET_V3 receive ring holds {} frame(s) the kernel has not retired yet "
                 "(retire timeout {} ms), which minicriu cannot put back where the kernel fills them; dump again "
                 "once the block is retired", what, active, a.num_pkts, r.retire_tmo());
  }
  if (head && r.retire_tmo() > kMaxV3FeedTmo)
    return failf("{}: the kernel fills block {} of its TPACKET_V3 receive ring, and a restore brings it there by "
                 "waiting out one retire timeout per block; its timeout of {} ms is over the {} ms minicriu waits",
                 what, head, r.retire_tmo(), kMaxV3FeedTmo);
  r.set_head(head);
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t* b = base + uint64_t{i} * r.block_size();
    if (i < head || (block_header(b).status & TP_STATUS_USER)) add_slot(r, i, b, r.block_size());
  }
  return {};
}

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000};
  ::nanosleep(&ts, nullptr);
}

}  // namespace

uint64_t packet_ring_size(const img::PacketRing& r) { return uint64_t{r.block_size()} * r.block_nr(); }

uint64_t packet_rings_size(const img::PacketSocketFile& sk) {
  return (sk.has_rx_ring() ? packet_ring_size(sk.rx_ring()) : 0) +
         (sk.has_tx_ring() ? packet_ring_size(sk.tx_ring()) : 0);
}

Status read_packet_rings(int fd, img::PacketSocketFile& sk, const std::string& what) {
  if (sk.has_rx_ring()) TRY(check_layout(sk.rx_ring(), what));
  if (sk.has_tx_ring()) TRY(check_layout(sk.tx_ring(), what));
  uint64_t size = packet_rings_size(sk);
  if (size == 0) return {};
  // A V3 block the kernel still fills is retired by its timer, tree frozen
  // or not: a few tries, a timeout apart.
  for (int attempt = 0;; attempt++) {
    auto m = with_context(Mapping::map(nullptr, size, PROT_READ, MAP_SHARED, fd, 0),
                          fmt::format("{}: its rings", what));
    if (!m) return std::unexpected(m.error());
    const auto* base = m->get<const uint8_t>();
    if (sk.has_tx_ring()) {
      // A new ring is zeros; one the application wrote frames into has a
      // kernel position (the frame it sends next) that cannot be set.
      const uint8_t* tx = base + (sk.has_rx_ring() ? packet_ring_size(sk.rx_ring()) : 0);
      uint64_t tx_size = packet_ring_size(sk.tx_ring());
      for (uint64_t off = 0; off < tx_size; off++)
        if (tx[off])
          return failf("{}: its transmit ring (PACKET_TX_RING) was written to (frame {} is not blank), and the "
                       "kernel's place in it (the frame it sends next) cannot be carried; only an unused transmit "
                       "ring can be", what, off / sk.tx_ring().frame_size());
    }
    if (!sk.has_rx_ring()) return {};
    img::PacketRing& r = *sk.mutable_rx_ring();
    r.clear_slots();
    if (sk.tpacket_version() != TPACKET_V3) return read_rx_frames(base, r, sk.tpacket_version(), what);
    bool busy = false;
    Status s = read_rx_blocks(base, r, what, busy);
    if (!busy || attempt == 3) return s;
    sleep_ms(std::min<uint32_t>(r.retire_tmo(), kMaxV3FeedTmo) + 5);
  }
}

Status set_packet_rings(int fd, const img::PacketSocketFile& sk, const std::string& what) {
  for (auto [has, ring, opt, name] :
       {std::tuple{sk.has_rx_ring(), &sk.rx_ring(), PACKET_RX_RING, "PACKET_RX_RING"},
        std::tuple{sk.has_tx_ring(), &sk.tx_ring(), PACKET_TX_RING, "PACKET_TX_RING"}}) {
    if (!has) continue;
    TRY(check_layout(*ring, what));
    tpacket_req3 req{};
    req.tp_block_size = ring->block_size();
    req.tp_block_nr = ring->block_nr();
    req.tp_frame_size = ring->frame_size();
    req.tp_frame_nr = ring->frame_nr();
    req.tp_retire_blk_tov = ring->retire_tmo();
    req.tp_sizeof_priv = ring->sizeof_priv();
    req.tp_feature_req_word = ring->features();
    socklen_t len = sk.tpacket_version() == TPACKET_V3 ? sizeof(tpacket_req3) : sizeof(tpacket_req);
    if (::setsockopt(fd, SOL_PACKET, opt, &req, len) != 0)
      return failf_errno("{}: {} of {} blocks of {} bytes, {} frames of {} bytes", what, name, req.tp_block_nr,
                         req.tp_block_size, req.tp_frame_nr, req.tp_frame_size);
  }
  return {};
}

namespace {

// Makes the kernel fill `count` frames (V1/V2) or blocks (V3) of the new
// receive ring with frames of our own, sent on lo: its position is then
// where it was at the dump. Only our frames pass the filter meanwhile.
Status feed(int fd, const img::PacketSocketFile& sk, const uint8_t* base, const std::string& what) {
  const img::PacketRing& r = sk.rx_ring();
  uint32_t count = r.head();
  unsigned lo = ::if_nametoindex("lo");
  if (!lo)
    return failf("{}: the kernel's place in its receive ring is frame {}; minicriu brings it there with frames "
                 "sent on lo, and there is no lo here", what, count);
  uint32_t cookie = 0;
  if (::getrandom(&cookie, sizeof cookie, 0) != sizeof cookie) cookie = static_cast<uint32_t>(::getpid()) ^ 0x4d43u;
  // ld [off]; jeq cookie ? accept : drop. A SOCK_DGRAM socket's filter sees
  // the frame from its payload, a SOCK_RAW one's from the Ethernet header.
  uint32_t off = sk.type() == SOCK_RAW ? 14 : 0;
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, off),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, cookie, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffff),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
    return failf_errno("{}: the filter for the frames it is fed", what);
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(kFeedProto);
  ll.sll_ifindex = static_cast<int>(lo);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) return failf_errno("{}: bind to lo", what);
  UniqueFd tx(::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!tx) return failf_errno("{}: a packet socket to feed its ring", what);
  ll.sll_halen = 6;
  uint8_t payload[32] = {};
  uint32_t be = htonl(cookie);
  std::memcpy(payload, &be, sizeof be);
  bool v3 = sk.tpacket_version() == TPACKET_V3;
  long wait_ms = v3 ? 3 * static_cast<long>(r.retire_tmo()) + 500 : 2000;
  for (uint32_t i = 0; i < count; i++) {
    if (::sendto(tx.get(), payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&ll), sizeof ll) < 0)
      return failf_errno("{}: a frame sent on lo to feed its ring", what);
    const uint8_t* slot = v3 ? base + uint64_t{i} * r.block_size() : base + frame_offset(r, i);
    for (long waited = 0;; waited++) {
      std::atomic_thread_fence(std::memory_order_acquire);
      uint64_t st = v3 ? block_header(slot).status : frame_status(slot, sk.tpacket_version());
      if (st & TP_STATUS_USER) break;
      if (waited >= wait_ms * 10)
        return failf("{}: {} {} of its receive ring was not filled by a frame sent on lo within {} ms; the kernel's "
                     "place in the ring cannot be set", what, v3 ? "block" : "frame", i, wait_ms);
      timespec ts{0, 100000};
      ::nanosleep(&ts, nullptr);
    }
  }
  int zero = 0;  // setsockopt wants an int, unused
  if (::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero) != 0)
    return failf_errno("{}: SO_DETACH_FILTER", what);
  // PACKET_STATISTICS: read, they start again from zero without our frames.
  tpacket_stats_v3 stats{};
  socklen_t len = v3 ? sizeof(tpacket_stats_v3) : sizeof(tpacket_stats);
  ::getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, &len);
  return {};
}

}  // namespace

Status refill_packet_rings(int fd, const img::PacketSocketFile& sk, const std::string& what) {
  if (!sk.has_rx_ring() || (sk.rx_ring().head() == 0 && sk.rx_ring().slots().empty())) return {};
  const img::PacketRing& r = sk.rx_ring();
  bool v3 = sk.tpacket_version() == TPACKET_V3;
  uint32_t slots = v3 ? r.block_nr() : r.frame_nr();
  uint32_t slot_size = v3 ? r.block_size() : r.frame_size();
  if (r.head() >= slots) return failf("{}: the kernel's place {} is outside its ring of {}", what, r.head(), slots);
  ASSIGN_OR_RETURN(Mapping m, with_context(Mapping::map(nullptr, packet_rings_size(sk), PROT_READ | PROT_WRITE,
                                                        MAP_SHARED, fd, 0),
                                           fmt::format("{}: its rings", what)));
  auto* base = m.get<uint8_t>();
  if (r.head()) TRY(feed(fd, sk, base, what));
  // The status word last: the frame is the application's only once whole.
  size_t status_at = v3 ? offsetof(tpacket_block_desc, hdr.bh1.block_status) : 0;
  size_t status_len = v3 || sk.tpacket_version() != TPACKET_V1 ? 4 : sizeof(unsigned long);
  for (auto& s : r.slots()) {
    if (s.index() >= slots || s.data().size() != slot_size)
      return failf("{}: a kept {} {} of {} bytes does not fit its ring", what, v3 ? "block" : "frame", s.index(),
                   s.data().size());
    uint8_t* dst = v3 ? base + uint64_t{s.index()} * r.block_size() : base + frame_offset(r, s.index());
    const auto* src = reinterpret_cast<const uint8_t*>(s.data().data());
    std::memcpy(dst, src, status_at);
    std::memcpy(dst + status_at + status_len, src + status_at + status_len, slot_size - status_at - status_len);
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(dst + status_at, src + status_at, status_len);
  }
  return {};
}

}  // namespace minicriu
