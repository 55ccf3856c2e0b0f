// Socket families and protocols beyond unix, TCP and UDP (packet, netlink,
// raw IP, ping, UDP-Lite: tests/programs/rawsocks.c) carried across dump and
// restore, and what they refuse: a non-empty queue. Packet rings, fanout
// and memberships: pktring_test.cc.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <filesystem>

#include "e2e_util.hpp"

using namespace e2e;

TEST(MoreSockets, PacketNetlinkRawPingAndUdpLiteSocketsComeBackTwice) { cycle("rawsocks", 2); }

TEST(MoreSockets, ThemAllAreInTheImagesAsTheirOwnKinds) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("rawsocks", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int packet = 0, netlink = 0, raw = 0, ping = 0, udplite = 0;
  for (auto& f : view.files()) {
    packet += f.has_packet_sk();
    netlink += f.has_netlink_sk();
    raw += f.has_raw_sk();
    ping += f.has_ping_sk();
    udplite += f.has_udplite_sk();
  }
  EXPECT_EQ(packet, 2);
  EXPECT_EQ(netlink, 2);
  EXPECT_EQ(raw, 3);
  EXPECT_EQ(ping, 1);
  EXPECT_EQ(udplite, 2);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.output.find("packet raw socket:["), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("netlink route socket:["), std::string::npos) << text.output;
  expect_intact(p);
}

namespace {

void expect_refused(const std::string& mode, const std::string& needle, const std::string& object = "fd ") {
  TempDir dir;
  Program p("rawsocks", dir, {mode});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  expect_one_line_error(r, needle);
  EXPECT_NE(r.output.find(fmt::format("pid {}: {}", p.pid(), object)), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "images/inventory.img"));
  expect_intact(p);
}

}  // namespace

TEST(MoreSockets, AQueuedRawPacketIsRefusedInOneLineAndTheTargetRunsOn) {
  expect_refused("queued", "data is queued on it, which minicriu cannot put back (packets a raw socket received");
}
