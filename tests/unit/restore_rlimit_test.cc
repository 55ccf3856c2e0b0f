// Which resource limits a restored process gets when restore cannot raise hard limits.
#include "restorer/rlimit_plan.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu {
namespace {

google::protobuf::RepeatedPtrField<img::RLimit> dumped(uint32_t res, uint64_t cur, uint64_t max) {
  google::protobuf::RepeatedPtrField<img::RLimit> out;
  img::RLimit* l = out.Add();
  l->set_resource(res);
  l->set_cur(cur);
  l->set_max(max);
  return out;
}

TEST(RestoreRlimits, LowersFreely) {
  std::vector<rlimit> now(RLIM_NLIMITS, rlimit{RLIM_INFINITY, RLIM_INFINITY});
  auto plan = plan_rlimits(dumped(RLIMIT_NOFILE, 256, 512), now, false);
  ASSERT_EQ(plan.limits.size(), 1u);
  EXPECT_EQ(plan.limits[0].cur, 256u);
  EXPECT_EQ(plan.limits[0].max, 512u);
  EXPECT_TRUE(plan.warnings.empty());
}

TEST(RestoreRlimits, KeepsTheHardLimitWithoutCapSysResource) {
  std::vector<rlimit> now(RLIM_NLIMITS, rlimit{1024, 4096});
  auto plan = plan_rlimits(dumped(RLIMIT_NOFILE, 8192, RLIM_INFINITY), now, false);
  ASSERT_EQ(plan.limits.size(), 1u);
  EXPECT_EQ(plan.limits[0].max, 4096u);
  EXPECT_EQ(plan.limits[0].cur, 4096u);
  ASSERT_EQ(plan.warnings.size(), 2u);
  EXPECT_NE(plan.warnings[0].find("CAP_SYS_RESOURCE"), std::string::npos);
}

TEST(RestoreRlimits, RaisesWithCapSysResource) {
  std::vector<rlimit> now(RLIM_NLIMITS, rlimit{1024, 4096});
  auto plan = plan_rlimits(dumped(RLIMIT_NOFILE, 8192, RLIM_INFINITY), now, true);
  EXPECT_EQ(plan.limits[0].max, RLIM_INFINITY);
  EXPECT_EQ(plan.limits[0].cur, 8192u);
  EXPECT_TRUE(plan.warnings.empty());
}

}  // namespace
}  // namespace minicriu
