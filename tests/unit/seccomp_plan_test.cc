// plan_seccomp (src/proc/seccomp.cc): what the blob installs once with TSYNC
// and what each thread installs itself, from the filters of the image; and
// that a damaged image is an error, never a loop or a read out of range.
#include <gtest/gtest.h>

#include <string>

#include "proc/seccomp.hpp"

using namespace minicriu;

namespace {

img::SeccompFilter filter(uint32_t parent, int insns = 1) {
  img::SeccompFilter f;
  f.set_program(std::string(8 * insns, '\x06'));
  f.set_parent(parent);
  return f;
}

img::ThreadCore* thread(img::ProcessCore& core, uint32_t tid, uint32_t mode, uint32_t newest) {
  img::ThreadCore* t = core.add_threads();
  t->set_tid(tid);
  t->set_seccomp_mode(mode);
  t->set_seccomp_filter(newest);
  return t;
}

}  // namespace

TEST(SeccompPlan, TheChainEveryThreadSharesIsInstalledOnceTheRestByEachThread) {
  img::ProcessCore core;
  *core.add_seccomp_filters() = filter(0);  // 1: F1, everyone's
  *core.add_seccomp_filters() = filter(1);  // 2: F2 on F1, T1's
  *core.add_seccomp_filters() = filter(2);  // 3: F3 on F2, T1's
  thread(core, 10, 2, 1);
  thread(core, 11, 2, 3);
  thread(core, 12, 2, 1);
  ASSERT_TRUE(has_seccomp(core));
  auto plan = plan_seccomp(core);
  ASSERT_TRUE(plan) << plan.error().what();
  EXPECT_EQ(plan->shared, (std::vector<uint32_t>{0}));
  ASSERT_EQ(plan->own.size(), 3u);
  EXPECT_TRUE(plan->own[0].empty());
  EXPECT_EQ(plan->own[1], (std::vector<uint32_t>{1, 2}));
  EXPECT_TRUE(plan->own[2].empty());
}

TEST(SeccompPlan, AThreadWithoutFiltersLeavesNothingShared) {
  img::ProcessCore core;
  *core.add_seccomp_filters() = filter(0);
  thread(core, 10, 2, 1);
  thread(core, 11, 1, 0);  // strict
  auto plan = plan_seccomp(core);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->shared.empty());
  EXPECT_EQ(plan->own[0], (std::vector<uint32_t>{0}));
  EXPECT_TRUE(plan->own[1].empty());
}

TEST(SeccompPlan, NoSeccompNoPlan) {
  img::ProcessCore core;
  thread(core, 10, 0, 0);
  EXPECT_FALSE(has_seccomp(core));
}

TEST(SeccompPlan, DamagedImagesAreErrors) {
  {
    img::ProcessCore core;  // a filter that is not there
    *core.add_seccomp_filters() = filter(0);
    thread(core, 10, 2, 2);
    EXPECT_FALSE(plan_seccomp(core));
  }
  {
    img::ProcessCore core;  // a cycle: a filter its own parent
    *core.add_seccomp_filters() = filter(1);
    thread(core, 10, 2, 1);
    EXPECT_FALSE(plan_seccomp(core));
  }
  {
    img::ProcessCore core;  // a program that is no whole number of instructions
    img::SeccompFilter f = filter(0);
    f.set_program("abc");
    *core.add_seccomp_filters() = f;
    thread(core, 10, 2, 1);
    EXPECT_FALSE(plan_seccomp(core));
  }
  {
    img::ProcessCore core;  // filters on a thread in strict mode
    *core.add_seccomp_filters() = filter(0);
    thread(core, 10, 1, 1);
    EXPECT_FALSE(plan_seccomp(core));
  }
}
