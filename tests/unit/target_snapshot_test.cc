#include "parasite/target_snapshot.hpp"

#include <gtest/gtest.h>
#include <signal.h>

using namespace minicriu;

namespace {

proc::MapsEntry mapping(uint64_t start, uint64_t end, std::string path) {
  proc::MapsEntry m;
  m.start = start;
  m.end = end;
  m.path = std::move(path);
  return m;
}

constexpr uint64_t sigmask_bit(int sig) { return 1ull << (sig - 1); }

TargetSnapshot app() {
  TargetSnapshot s;
  s.fds = {0, 1, 2, 5};
  s.maps = {mapping(0x400000, 0x401000, "/bin/app"), mapping(0x7f0000000000, 0x7f0000100000, "")};
  s.pending = sigmask_bit(SIGUSR2);
  return s;
}

}  // namespace

TEST(TargetSnapshot, NothingLeftWhenTheTargetHoldsWhatItHeld) {
  Leftovers l = find_leftovers(app(), app());
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(l.describe(), "nothing");
}

TEST(TargetSnapshot, NewFdsAndTheParasiteMappingAreLeftovers) {
  TargetSnapshot now = app();
  now.fds.insert({3, 6});  // the parasite's socket and page pipe, in the gaps and above
  now.maps.push_back(mapping(0x7f1000000000, 0x7f1000112000, "/memfd:minicriu-parasite (deleted)"));
  Leftovers l = find_leftovers(app(), now);
  EXPECT_EQ(l.fds, (std::vector<int>{3, 6}));
  ASSERT_EQ(l.mappings.size(), 1u);
  EXPECT_EQ(l.mappings[0].start, RemotePtr<>(0x7f1000000000));
  EXPECT_EQ(l.mappings[0].size, 0x112000u);
  EXPECT_FALSE(l.sigpipe);
  EXPECT_EQ(l.describe(), "fds 3 6, mappings 0x7f1000000000-0x7f1000112000");
}

TEST(TargetSnapshot, OnlyTheParasitesMappingsAreEverTakenAway) {
  TargetSnapshot now = app();
  // The target's own mappings may differ (its stack grew, an earlier
  // mapping split): not ours to touch.
  now.maps.push_back(mapping(0x7f2000000000, 0x7f2000001000, "/memfd:app-pool (deleted)"));
  now.maps[1].end += 0x1000;
  EXPECT_TRUE(find_leftovers(app(), now).empty());
}

TEST(TargetSnapshot, AParasiteMappingTheTargetHadBeforeIsItsOwn) {
  TargetSnapshot before = app();
  before.maps.push_back(mapping(0x7f3000000000, 0x7f3000001000, "/memfd:minicriu-parasite (deleted)"));
  EXPECT_TRUE(find_leftovers(before, before).empty());
}

TEST(TargetSnapshot, OnlyASigpipeRaisedDuringTheDumpIsOurs) {
  TargetSnapshot now = app();
  now.pending |= sigmask_bit(SIGPIPE) | sigmask_bit(SIGHUP);
  Leftovers l = find_leftovers(app(), now);
  EXPECT_TRUE(l.sigpipe);
  EXPECT_TRUE(l.fds.empty());
  EXPECT_EQ(l.describe(), "SIGPIPE");
  // Pending before the dump: the target's own, and it stays.
  TargetSnapshot before = app();
  before.pending |= sigmask_bit(SIGPIPE);
  EXPECT_FALSE(find_leftovers(before, now).sigpipe);
}
