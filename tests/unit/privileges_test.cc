// The restore's credential rules (proc/privileges.cc) on made-up callers and
// images: what a user may give a process, and what needs which capability.
#include <gtest/gtest.h>

#include "proc/privileges.hpp"

namespace minicriu {
namespace {

constexpr uint64_t cap_bit(int cap) { return uint64_t{1} << cap; }
constexpr uint64_t kAll = (uint64_t{1} << 41) - 1;

img::Creds creds(uint32_t uid, uint64_t caps, uint64_t bnd = kAll) {
  img::Creds c;
  for (int i = 0; i < 4; i++) {
    c.add_uids(uid);
    c.add_gids(uid);
  }
  c.set_cap_prm(caps);
  c.set_cap_eff(caps);
  c.set_cap_bnd(bnd);
  return c;
}

TEST(Privileges, TheUsersOwnProcessMayBeRestoredByTheUser) {
  img::Creds user = creds(1000, cap_bit(cap::kCheckpointRestore));
  EXPECT_TRUE(check_may_restore(user).has_value());
  EXPECT_TRUE(check_restored_creds(7, creds(1000, 0), user).has_value());
}

TEST(Privileges, WithoutCheckpointRestoreNothingIsRestored) {
  auto st = check_may_restore(creds(1000, 0));
  ASSERT_FALSE(st.has_value());
  EXPECT_NE(st.error().what().find("restore needs CAP_CHECKPOINT_RESTORE"), std::string::npos);
  EXPECT_EQ(st.error().err(), EPERM);
  EXPECT_TRUE(check_may_restore(creds(1000, cap_bit(cap::kSysAdmin))).has_value());
}

TEST(Privileges, RootMayGiveAnyIdsGroupsAndItsCapabilities) {
  img::Creds root = creds(0, kAll);
  img::Creds image = creds(2000, cap_bit(10), kAll & ~cap_bit(12));
  image.set_gids(1, 1001);
  image.add_groups(100);
  image.set_securebits(1);
  EXPECT_TRUE(check_restored_creds(7, image, root).has_value());
}

TEST(Privileges, EachFieldTheUserCouldNotGiveIsNamed) {
  img::Creds user = creds(1000, cap_bit(cap::kCheckpointRestore));
  struct Case {
    void (*edit)(img::Creds&);
    const char* needle;
  };
  for (const Case& c : std::initializer_list<Case>{
           {[](img::Creds& i) { i.set_uids(2, 0); }, "pid 7: its saved uid 0"},
           {[](img::Creds& i) { i.set_gids(3, 5); }, "pid 7: its filesystem gid 5 is none of"},
           {[](img::Creds& i) { i.add_groups(27); }, "its supplementary groups (27)"},
           {[](img::Creds& i) { i.set_cap_prm(cap_bit(cap::kSysPtrace)); }, "permitted capabilities hold CAP_SYS_PTRACE"},
           {[](img::Creds& i) { i.set_cap_amb(cap_bit(1)); }, "ambient capabilities CAP_DAC_OVERRIDE"},
           {[](img::Creds& i) { i.set_cap_bnd(kAll & ~cap_bit(0)); }, "bounding set lacks CAP_CHOWN"},
           {[](img::Creds& i) { i.set_securebits(4); }, "securebits 0x4 are not minicriu's 0x0"},
       }) {
    img::Creds image = creds(1000, 0);
    c.edit(image);
    auto st = check_restored_creds(7, image, user);
    ASSERT_FALSE(st.has_value()) << c.needle;
    EXPECT_NE(st.error().what().find(c.needle), std::string::npos) << st.error().what();
  }
}

TEST(Privileges, KeepCapsIsTheProcessesOwnButALockedBitStays) {
  img::Creds user = creds(1000, cap_bit(cap::kCheckpointRestore));
  img::Creds image = creds(1000, 0);
  image.set_securebits(1u << 4);  // SECBIT_KEEP_CAPS
  EXPECT_TRUE(check_restored_creds(7, image, user).has_value());
  img::Creds root = creds(0, kAll);
  root.set_securebits(0x3);  // NOROOT, locked
  image.set_securebits(0);
  auto st = check_restored_creds(7, image, root);
  ASSERT_FALSE(st.has_value());
  EXPECT_NE(st.error().what().find("locked bits"), std::string::npos);
}

TEST(Privileges, CapNamesAreTheKernels) {
  EXPECT_EQ(cap_names(0), "none");
  EXPECT_EQ(cap_names(cap_bit(12) | cap_bit(40)), "CAP_NET_ADMIN, CAP_CHECKPOINT_RESTORE");
  EXPECT_EQ(cap_names(cap_bit(50)), "capability 50");
}

}  // namespace
}  // namespace minicriu
