#include <gtest/gtest.h>

#include "fs/ghost_policy.hpp"

using namespace minicriu;

TEST(GhostPolicy, ParseSize) {
  EXPECT_EQ(parse_size("4096").value(), 4096u);
  EXPECT_EQ(parse_size("512K").value(), 512u << 10);
  EXPECT_EQ(parse_size("64M").value(), 64u << 20);
  EXPECT_EQ(parse_size("2G").value(), 2ull << 30);
  EXPECT_EQ(parse_size("1TiB").value(), 1ull << 40);
  EXPECT_FALSE(parse_size(""));
  EXPECT_FALSE(parse_size("M"));
  EXPECT_FALSE(parse_size("12X"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_FALSE(parse_size("17179869184G"));  // overflows 64 bits
}

TEST(GhostPolicy, FormatSize) {
  EXPECT_EQ(format_size(100), "100 bytes");
  EXPECT_EQ(format_size(64u << 20), "64 MiB");
  EXPECT_EQ(format_size(1536u << 20), "1.5 GiB");
}

TEST(GhostPolicy, DefaultLetsAnMpiPoolThroughAndStopsARunawayFile) {
  GhostPolicy policy;
  EXPECT_TRUE(policy.decide("/dev/shm/vader_segment.host.0", 64u << 20));
  auto refused = policy.decide("/tmp/huge", 3ull << 30);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(),
            "3 GiB of data, over the ghost file limit of 1 GiB; raise it with --ghost-limit SIZE "
            "or let this path through with --ghost-policy 'PATTERN:copy'");
}

TEST(GhostPolicy, RulesWinOverTheLimitFirstMatchFirst) {
  auto policy = GhostPolicy::from_options("1M", {"/tmp/ompi-*:copy", "/scratch/*:fail", "/tmp/*:fail"});
  ASSERT_TRUE(policy) << policy.error().what();
  EXPECT_EQ(policy->limit(), 1u << 20);
  EXPECT_TRUE(policy->decide("/tmp/ompi-sessions/pool", 5ull << 30));
  EXPECT_FALSE(policy->decide("/scratch/x", 10));
  EXPECT_FALSE(policy->decide("/tmp/other", 10));
  EXPECT_TRUE(policy->decide("/var/small", 1u << 20));
  EXPECT_FALSE(policy->decide("/var/big", (1u << 20) + 1));
}

TEST(GhostPolicy, BadOptionsAreClearErrors) {
  auto bad_limit = GhostPolicy::from_options("lots", {});
  ASSERT_FALSE(bad_limit);
  EXPECT_NE(bad_limit.error().message().find("--ghost-limit"), std::string::npos);
  auto bad_rule = GhostPolicy::from_options("", {"/tmp/*:keep"});
  ASSERT_FALSE(bad_rule);
  EXPECT_NE(bad_rule.error().message().find("neither copy nor fail"), std::string::npos);
  EXPECT_FALSE(GhostPolicy::from_options("", {"nocolon"}));
  // A pattern may hold a colon; the action follows the last one.
  auto colon = parse_ghost_rule("/tmp/a:b*:copy");
  ASSERT_TRUE(colon);
  EXPECT_EQ(colon->pattern, "/tmp/a:b*");
}
