// Packet sockets whole (tests/programs/pktring.c): receive rings (TPACKET_V2
// and V3) with a frame and a block the application holds, a transmit ring,
// memberships and a fanout group, carried across dump and restore (twice),
// and what is still refused, each in one line with the target running on.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <net/if.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include "e2e_util.hpp"

using namespace e2e;

// The maps of a restored socket name another inode: the program checks its
// rings' addresses itself.
TEST(PacketRings, RingsFanoutAndMembershipsComeBackTwice) { cycle("pktring", 2, {}, false); }

namespace {

// What the images say of the program's packet sockets.
void expect_packet_images(const std::string& images) {
  auto view = show_json(images);
  int rx = 0, tx = 0, fanout = 0, members = 0;
  for (auto& f : view.files()) {
    if (!f.has_packet_sk()) continue;
    auto& sk = f.packet_sk();
    if (sk.has_rx_ring()) {
      rx++;
      if (sk.tpacket_version() == TPACKET_V2) {
        EXPECT_EQ(sk.rx_ring().frame_nr(), 4u);
        EXPECT_EQ(sk.rx_ring().head(), 3u);       // frames 0-2 received
        EXPECT_EQ(sk.rx_ring().slots_size(), 3);  // two released, one kept, all before the kernel
      } else {
        EXPECT_EQ(sk.tpacket_version(), static_cast<uint32_t>(TPACKET_V3));
        EXPECT_EQ(sk.rx_ring().block_nr(), 4u);
        EXPECT_EQ(sk.rx_ring().head(), 2u);  // blocks 0 and 1 retired
        EXPECT_EQ(sk.rx_ring().retire_tmo(), 10u);
      }
    }
    tx += sk.has_tx_ring();
    fanout += sk.fanout() != 0;
    for (auto& m : sk.memberships()) {
      members++;
      EXPECT_EQ(m.ifname(), "lo");
      EXPECT_EQ(m.count(), m.type() == PACKET_MR_MULTICAST ? 2u : 1u) << m.type();
    }
  }
  EXPECT_EQ(rx, 2);
  EXPECT_EQ(tx, 1);
  EXPECT_EQ(fanout, 2);
  EXPECT_EQ(members, 2);
  int rings = 0;
  for (auto& proc : view.processes())
    for (auto& v : proc.mm().vmas()) rings += v.kind() == minicriu::img::VMA_PACKET_RING;
  EXPECT_EQ(rings, 3);
}

}  // namespace

TEST(PacketRings, TheImagesHoldTheRingsTheKeptFramesAndTheGroup) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("pktring", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  expect_packet_images(images);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.output.find("TPACKET_V3"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("fanout group"), std::string::npos) << text.output;
  expect_intact(p);
}

// The memberships and the group as the kernel shows them (packet_diag) in
// the restored program: a dump of it holds what the first one did.
TEST(PacketRings, ADumpOfTheRestoredProgramHoldsTheSameRingsMembershipsAndGroup) {
  TempDir dir;
  Program p("pktring", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string first = images_dir(dir, "first"), second = images_dir(dir, "second");
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, first, &p));
  RestoredTree restored;
  restored.add_from(first);
  ASSERT_EQ(restore_detached(first), pid);
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", second, "--leave-running"});
  ASSERT_EQ(r.status, 0) << r.output;
  expect_packet_images(second);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "pktring.log");
}

TEST(PacketRings, AUsedTransmitRingIsRefusedInOneLine) {
  expect_dump_refused("pktring", {"txused"}, [](pid_t pid) {
    return std::vector<std::string>{"its transmit ring (PACKET_TX_RING) was written to (frame 0 is not blank)",
                                    fmt::format("pid {}: fd ", pid)};
  });
}

TEST(PacketRings, AV3BlockTheKernelStillFillsIsRefusedInOneLine) {
  expect_dump_refused("pktring", {"v3busy"}, [](pid_t pid) {
    return std::vector<std::string>{"holds 1 frame(s) the kernel has not retired yet (retire timeout 60000 ms)",
                                    fmt::format("pid {}: fd ", pid)};
  });
}

TEST(PacketRings, ARingMappedWithoutItsSocketsFdIsRefusedInOneLine) {
  expect_dump_refused("pktring", {"unheld"}, [](pid_t pid) {
    return std::vector<std::string>{"a mapping of a socket that is not a packet socket held by an fd of the tree",
                                    fmt::format("pid {}: mapping ", pid)};
  });
}

TEST(PacketRings, AFanoutGroupWithAMemberOutsideTheTreeIsRefusedInOneLine) {
  TempDir dir;
  Program p("pktring", dir);
  ASSERT_TRUE(p.wait_ready());
  // This test joins the program's group: a socket bound as the group's are
  // (lo, the program's third ethertype), the same mode.
  unsigned short eth = static_cast<unsigned short>(0x6000 + (p.pid() & 0x3ff) * 4 + 2);
  int s = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(eth));
  ASSERT_GE(s, 0);
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(eth);
  ll.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&ll), sizeof ll), 0);
  int group = (p.pid() & 0xffff) | (PACKET_FANOUT_LB << 16);
  ASSERT_EQ(::setsockopt(s, SOL_PACKET, PACKET_FANOUT, &group, sizeof group), 0) << strerror(errno);
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, fmt::format("is in fanout group {:#x}, which socket:[", p.pid() & 0xffff));
  EXPECT_NE(r.output.find("outside the tree is in too"), std::string::npos) << r.output;
  ::close(s);  // the program's fanout check wants the group as it made it
  expect_intact(p);
}
