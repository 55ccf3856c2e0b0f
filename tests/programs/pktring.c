/* Packet sockets whole: rings, a fanout group, memberships (issue 17).
 *
 *   - a SOCK_RAW socket bound to lo with a TPACKET_V2 receive ring of 4
 *     frames (PACKET_RESERVE 32), mapped: three frames received, the first
 *     two released, the third kept (TP_STATUS_USER); two multicast
 *     memberships (the same address twice) and an ALLMULTI one on lo;
 *   - a SOCK_DGRAM socket with a TPACKET_V3 receive ring of 4 blocks (retire
 *     timeout 10 ms), mapped: block 0 received and released, block 1 kept;
 *   - a SOCK_RAW socket with a TPACKET_V2 transmit ring, mapped, unused;
 *   - two sockets in a fanout group (PACKET_FANOUT_LB, id = pid & 0xffff).
 * Ethertypes are 0x6000 + (pid & 0x3ff) * 4 and the next ones, so that two
 * runs at once do not see each other's frames.
 *
 *   pktring READY DIR           all of the above
 *   pktring READY DIR txused    a frame sent through the transmit ring too
 *                               (a dump refuses it in one line)
 *   pktring READY DIR v3busy    a V3 ring with a 60 s retire timeout and a
 *                               frame in its open block (refused)
 *   pktring READY DIR unheld    a ring mapped, its socket's fd closed (refused)
 *
 * After SIGUSR1: every ring is mapped at the same address from a socket, the
 * kept frame and block hold their bytes and TP_STATUS_USER, new frames land
 * where the kernel was at the dump (the V2 ring goes on at frame 3, then
 * wraps to 0; the V3 ring at block 2), a frame sent through the transmit
 * ring arrives, and the fanout group spreads frames over both sockets. The
 * memberships cannot be seen from the program (PACKET_DROP_MEMBERSHIP of
 * none succeeds): pktring_test.cc dumps the restored program again and reads
 * them in the images.
 * Exit 0 only if all held. */
#include "prog_common.h"  /* first: _GNU_SOURCE */

#include <arpa/inet.h>
#include <net/if.h> /* before the linux headers that include linux/if.h */
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

static unsigned lo;
static unsigned short eth_base;
static int sender;

static void seti(int fd, int level, int name, int v, const char* what) {
  if (setsockopt(fd, level, name, &v, sizeof v) != 0) {
    fprintf(stderr, "setsockopt %s: %s\n", what, strerror(errno));
    exit(2);
  }
}

static int geti(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return -1;
  return v;
}

static int packet_socket(int type, unsigned short eth) {
  int s = socket(AF_PACKET, type, htons(eth));
  struct sockaddr_ll ll = {0};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(eth);
  ll.sll_ifindex = (int)lo;
  if (s < 0 || bind(s, (struct sockaddr*)&ll, sizeof ll) != 0) {
    perror("packet socket");
    exit(2);
  }
  return s;
}

/* A frame on lo with ethertype eth: "PKR", seq, our pid. */
static void send_frame(unsigned short eth, unsigned char seq) {
  struct sockaddr_ll ll = {0};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(eth);
  ll.sll_ifindex = (int)lo;
  ll.sll_halen = 6;
  unsigned char payload[32] = {'P', 'K', 'R', seq};
  int pid = getpid();
  memcpy(payload + 4, &pid, sizeof pid);
  if (sendto(sender, payload, sizeof payload, 0, (struct sockaddr*)&ll, sizeof ll) != sizeof payload)
    fprintf(stderr, "send on lo: %s\n", strerror(errno));
}

static int is_ours(const unsigned char* p, unsigned char seq) {
  int pid = getpid();
  return p[0] == 'P' && p[1] == 'K' && p[2] == 'R' && p[3] == seq && memcmp(p + 4, &pid, sizeof pid) == 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Waits up to ms for *status to have TP_STATUS_USER. */
static int wait_user(volatile uint32_t* status, int ms) {
  for (int i = 0; i < ms * 10; i++) {
    if (__atomic_load_n(status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) return 1;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* The V2 ring: 4 frames of 2048 in 2 blocks of 4096. */
#define V2_FRAME 2048
#define V2_FRAMES 4
static unsigned char* v2;
static struct tpacket2_hdr* v2_frame(int i) { return (struct tpacket2_hdr*)(v2 + i * V2_FRAME); }
/* The payload of a SOCK_RAW frame: after the Ethernet header. */
static const unsigned char* v2_payload(int i) { return (const unsigned char*)v2_frame(i) + v2_frame(i)->tp_mac + 14; }

static int v2_has(int i, unsigned char seq) {
  return wait_user(&v2_frame(i)->tp_status, 2000) && is_ours(v2_payload(i), seq);
}

/* The V3 ring: 4 blocks of 4096. */
#define V3_BLOCK 4096
#define V3_BLOCKS 4
static unsigned char* v3;
static struct tpacket_block_desc* v3_block(int i) { return (struct tpacket_block_desc*)(v3 + i * V3_BLOCK); }
static int v3_has(int i, unsigned char seq) {
  struct tpacket_block_desc* b = v3_block(i);
  if (!wait_user(&b->hdr.bh1.block_status, 2000) || b->hdr.bh1.num_pkts != 1) return 0;
  struct tpacket3_hdr* h = (struct tpacket3_hdr*)((unsigned char*)b + b->hdr.bh1.offset_to_first_pkt);
  return is_ours((unsigned char*)h + h->tp_net, seq); /* SOCK_DGRAM: tp_net is the payload */
}

/* Whether /proc/self/maps shows a mapping of a socket at addr. */
static int mapped_socket_at(const void* addr) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (f && fgets(line, sizeof line, f))
    if (strtoull(line, NULL, 16) == (unsigned long long)(uintptr_t)addr && strstr(line, "socket:[")) found = 1;
  if (f) fclose(f);
  return found;
}

static int readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const char* mode = argc > 3 ? argv[3] : "";
  prog_install_usr1();
  lo = if_nametoindex("lo");
  if (!lo) return 2;
  eth_base = (unsigned short)(0x6000 + (getpid() & 0x3ff) * 4);
  unsigned short e2 = eth_base, e3 = eth_base + 1, ef = eth_base + 2;
  sender = socket(AF_PACKET, SOCK_DGRAM, 0);
  if (sender < 0) return 2;

  if (strcmp(mode, "v3busy") == 0 || strcmp(mode, "unheld") == 0) {
    int s = packet_socket(SOCK_DGRAM, e3);
    int busy = strcmp(mode, "v3busy") == 0;
    seti(s, SOL_PACKET, PACKET_VERSION, busy ? TPACKET_V3 : TPACKET_V2, "PACKET_VERSION");
    struct tpacket_req3 req = {V3_BLOCK, V3_BLOCKS, 2048, 8, busy ? 60000 : 0, 0, 0};
    if (setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, busy ? sizeof req : sizeof(struct tpacket_req)) != 0)
      return 2;
    v3 = mmap(NULL, V3_BLOCK * V3_BLOCKS, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
    if (v3 == MAP_FAILED) return 2;
    if (busy) {
      send_frame(e3, 1);
      sleep_ms(50);
    } else {
      close(s);
    }
    prog_ready(argv[1]);
    prog_wait_usr1();
    return 0;
  }

  /* V2 receive ring, memberships. */
  int s2 = packet_socket(SOCK_RAW, e2);
  seti(s2, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
  seti(s2, SOL_PACKET, PACKET_RESERVE, 32, "PACKET_RESERVE");
  struct tpacket_req r2 = {4096, 2, V2_FRAME, V2_FRAMES};
  if (setsockopt(s2, SOL_PACKET, PACKET_RX_RING, &r2, sizeof r2) != 0) return 2;
  v2 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, s2, 0);
  if (v2 == MAP_FAILED) return 2;
  static const unsigned char mcast[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};
  struct packet_mreq mr = {0};
  mr.mr_ifindex = (int)lo;
  mr.mr_type = PACKET_MR_MULTICAST;
  mr.mr_alen = 6;
  memcpy(mr.mr_address, mcast, 6);
  for (int i = 0; i < 2; i++)
    if (setsockopt(s2, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0) return 2;
  mr.mr_type = PACKET_MR_ALLMULTI;
  mr.mr_alen = 0;
  if (setsockopt(s2, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0) return 2;
  for (int i = 0; i < 3; i++) send_frame(e2, (unsigned char)i);
  for (int i = 0; i < 3; i++)
    if (!v2_has(i, (unsigned char)i)) {
      fprintf(stderr, "V2 frame %d did not come\n", i);
      return 2;
    }
  v2_frame(0)->tp_status = TP_STATUS_KERNEL;
  v2_frame(1)->tp_status = TP_STATUS_KERNEL;
  uint32_t kept_len = v2_frame(2)->tp_len;
  unsigned char kept[V2_FRAME];
  memcpy(kept, v2_frame(2), V2_FRAME);

  /* V3 receive ring. */
  int s3 = packet_socket(SOCK_DGRAM, e3);
  seti(s3, SOL_PACKET, PACKET_VERSION, TPACKET_V3, "PACKET_VERSION");
  struct tpacket_req3 r3 = {V3_BLOCK, V3_BLOCKS, 2048, 8, 10, 0, 0};
  if (setsockopt(s3, SOL_PACKET, PACKET_RX_RING, &r3, sizeof r3) != 0) return 2;
  v3 = mmap(NULL, V3_BLOCK * V3_BLOCKS, PROT_READ | PROT_WRITE, MAP_SHARED, s3, 0);
  if (v3 == MAP_FAILED) return 2;
  send_frame(e3, 10);
  if (!v3_has(0, 10)) return 2;
  v3_block(0)->hdr.bh1.block_status = TP_STATUS_KERNEL;
  send_frame(e3, 11);
  if (!v3_has(1, 11)) return 2;
  unsigned char kept3[V3_BLOCK];
  memcpy(kept3, v3_block(1), V3_BLOCK);

  /* A transmit ring. */
  int st = packet_socket(SOCK_RAW, e2);
  seti(st, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
  struct tpacket_req rt = {4096, 1, V2_FRAME, 2};
  if (setsockopt(st, SOL_PACKET, PACKET_TX_RING, &rt, sizeof rt) != 0) return 2;
  unsigned char* tx = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, st, 0);
  if (tx == MAP_FAILED) return 2;
  /* A frame in the transmit ring: Ethernet header, "TXR". */
  int txed = 0;
  const size_t data_at = TPACKET_ALIGN(sizeof(struct tpacket2_hdr));
  if (strcmp(mode, "txused") == 0) {
    struct tpacket2_hdr* th = (struct tpacket2_hdr*)tx;
    unsigned char* d = tx + data_at;
    /* To an ethertype nobody here listens to: the rings stay as they are. */
    unsigned short none = eth_base + 3;
    memset(d, 0xff, 6);
    d[12] = (unsigned char)(none >> 8), d[13] = (unsigned char)none;
    memcpy(d + 14, "TXR", 3);
    th->tp_len = 60;
    __atomic_store_n(&th->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
    if (send(st, NULL, 0, 0) < 0) return 2;
    txed = 1;
  }

  /* A fanout group of two. */
  int fa = packet_socket(SOCK_RAW, ef), fb = packet_socket(SOCK_RAW, ef);
  int group = (getpid() & 0xffff) | (PACKET_FANOUT_LB << 16);
  seti(fa, SOL_PACKET, PACKET_FANOUT, group, "PACKET_FANOUT");
  seti(fb, SOL_PACKET, PACKET_FANOUT, group, "PACKET_FANOUT");

  prog_ready(argv[1]);
  prog_wait_usr1();

  /* The V2 ring: where it was, the kept frame as it was. */
  CHECK(mapped_socket_at(v2), "the V2 ring is mapped from a socket at %p", (void*)v2);
  CHECK(geti(s2, SOL_PACKET, PACKET_VERSION) == TPACKET_V2, "PACKET_VERSION of the V2 ring's socket");
  CHECK(geti(s2, SOL_PACKET, PACKET_RESERVE) == 32, "PACKET_RESERVE");
  CHECK(v2_frame(2)->tp_status & TP_STATUS_USER, "the kept frame is still the application's (status %#x)",
        v2_frame(2)->tp_status);
  CHECK(v2_frame(2)->tp_len == kept_len && memcmp(v2_frame(2), kept, V2_FRAME) == 0 && is_ours(v2_payload(2), 2),
        "the kept frame holds its bytes");
  CHECK(!(v2_frame(0)->tp_status & TP_STATUS_USER) && !(v2_frame(1)->tp_status & TP_STATUS_USER) &&
            !(v2_frame(3)->tp_status & TP_STATUS_USER),
        "the released frames are the kernel's");
  v2_frame(2)->tp_status = TP_STATUS_KERNEL;
  send_frame(e2, 3);
  CHECK(v2_has(3, 3), "a new frame lands in frame 3, where the kernel was (status %#x)", v2_frame(3)->tp_status);
  v2_frame(3)->tp_status = TP_STATUS_KERNEL;
  send_frame(e2, 4);
  CHECK(v2_has(0, 4), "the next one in frame 0 (status %#x)", v2_frame(0)->tp_status);
  v2_frame(0)->tp_status = TP_STATUS_KERNEL;

  /* The transmit ring: it sends, the V2 ring receives (frame 1). */
  CHECK(mapped_socket_at(tx), "the transmit ring is mapped from a socket at %p", (void*)tx);
  if (!txed) {
    struct tpacket2_hdr* th = (struct tpacket2_hdr*)tx;
    unsigned char* d = tx + data_at;
    memset(d, 0xff, 6);
    d[12] = (unsigned char)(e2 >> 8), d[13] = (unsigned char)e2;
    unsigned char payload[32] = {'P', 'K', 'R', 5};
    int pid = getpid();
    memcpy(payload + 4, &pid, sizeof pid);
    memcpy(d + 14, payload, sizeof payload);
    th->tp_len = 14 + sizeof payload;
    __atomic_store_n(&th->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
    CHECK(send(st, NULL, 0, 0) == (ssize_t)(14 + sizeof payload), "send through the transmit ring: %s",
          strerror(errno));
    CHECK(v2_has(1, 5), "the frame sent through the transmit ring arrives (V2 frame 1 status %#x)",
          v2_frame(1)->tp_status);
    v2_frame(1)->tp_status = TP_STATUS_KERNEL;
  }

  /* The V3 ring. */
  CHECK(mapped_socket_at(v3), "the V3 ring is mapped from a socket at %p", (void*)v3);
  CHECK(geti(s3, SOL_PACKET, PACKET_VERSION) == TPACKET_V3, "PACKET_VERSION of the V3 ring's socket");
  CHECK((v3_block(1)->hdr.bh1.block_status & TP_STATUS_USER) && memcmp(v3_block(1), kept3, V3_BLOCK) == 0,
        "the kept block is the application's and holds its bytes (status %#x)", v3_block(1)->hdr.bh1.block_status);
  CHECK(!(v3_block(0)->hdr.bh1.block_status & TP_STATUS_USER), "the released block is the kernel's");
  v3_block(1)->hdr.bh1.block_status = TP_STATUS_KERNEL;
  send_frame(e3, 12);
  CHECK(v3_has(2, 12), "a new frame lands in block 2, where the kernel was (status %#x)",
        v3_block(2)->hdr.bh1.block_status);

  /* The fanout group: both in it, frames spread over the two. */
  CHECK(geti(fa, SOL_PACKET, PACKET_FANOUT) == group && geti(fb, SOL_PACKET, PACKET_FANOUT) == group,
        "PACKET_FANOUT %#x and %#x, want %#x", geti(fa, SOL_PACKET, PACKET_FANOUT),
        geti(fb, SOL_PACKET, PACKET_FANOUT), group);
  for (int i = 0; i < 4; i++) send_frame(ef, (unsigned char)(20 + i));
  int got_a = 0, got_b = 0;
  unsigned char buf[256];
  while (readable(fa, 500) && recv(fa, buf, sizeof buf, 0) > 0) got_a++;
  while (readable(fb, 100) && recv(fb, buf, sizeof buf, 0) > 0) got_b++;
  CHECK(got_a + got_b == 4 && got_a >= 1 && got_b >= 1, "the group spreads 4 frames: %d and %d", got_a, got_b);
  return prog_failures ? 1 : 0;
}
