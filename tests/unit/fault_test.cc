// MINICRIU_FAULT's parser and the steps of a FaultScope (base/fault.hpp):
// which occurrence fails, what a count run says, that a pause hides the plan,
// and that a cancelled scope fails its next step and its waits.
#include "base/fault.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <string>
#include <vector>

namespace minicriu {
namespace {

// Lines of a Logger, kept.
struct Lines {
  std::vector<std::string> lines;
  Logger logger() {
    LogOptions o;
    o.level = LogLevel::info;
    o.sink = [this](LogLevel, std::string_view line) { lines.emplace_back(line); };
    return Logger(o);
  }
};

class EnvFault {
 public:
  explicit EnvFault(const char* spec) { ::setenv("MINICRIU_FAULT", spec, 1); }
  ~EnvFault() { ::unsetenv("MINICRIU_FAULT"); }
};

TEST(FaultPlan, MalformedSpecsPlanNothing) {
  for (const char* s : {"", "count2", "step", "step:", ":3", "step:0", "step:x", "step:1:stall2", "step:1:delay=",
                        "step:1:delay=0", "step:1:stall:delay=5", "parasite-stall"})
    EXPECT_FALSE(FaultPlan::parse(s).active()) << s;
  EXPECT_TRUE(FaultPlan::parse("count").active());
  EXPECT_TRUE(FaultPlan::parse("a/b:3").active());
  EXPECT_TRUE(FaultPlan::parse("a/b:3:stall").stall());
  EXPECT_EQ(FaultPlan::parse("a/b:3:delay=20").delay_ms(), 20u);
}

TEST(FaultPlan, TheNthOccurrenceOfTheStepFailsAndNoOther) {
  Lines l;
  Logger log = l.logger();
  FaultPlan plan = FaultPlan::parse("take_vma/pipe:2");
  EXPECT_EQ(plan.hit("take_vma/pipe", log).value_or(true), false);
  EXPECT_EQ(plan.hit("take_vma/ghost-file", log).value_or(true), false);
  auto second = plan.hit("take_vma/pipe", log);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().message(), "fault injected at step take_vma/pipe:2 (MINICRIU_FAULT)");
  EXPECT_EQ(plan.hit("take_vma/pipe", log).value_or(true), false);
}

TEST(FaultScope, CountsEveryStepAndPausesInFailurePaths) {
  Lines l;
  Logger log = l.logger();
  EnvFault env("count");
  FaultScope scope(log, nullptr);
  EXPECT_TRUE(fault_point("image-write").has_value());
  EXPECT_TRUE(fault_point("check", "unix socket").has_value());
  {
    FaultPause pause;
    EXPECT_TRUE(fault_point("image-write").has_value());
  }
  EXPECT_TRUE(fault_point("image-write").has_value());
  std::vector<std::string> steps;
  for (auto& line : l.lines)
    if (auto at = line.find("fault step "); at != std::string::npos) steps.push_back(line.substr(at + 11));
  EXPECT_EQ(steps, (std::vector<std::string>{"image-write:1", "check/unix-socket:1", "image-write:2"}));
}

TEST(FaultScope, ACancelledScopeFailsItsNextStepAndWait) {
  Lines l;
  Logger log = l.logger();
  Cancel cancel;
  FaultScope scope(log, &cancel);
  EXPECT_TRUE(fault_point("remote-syscall").has_value());
  EXPECT_TRUE(check_cancelled().has_value());
  cancel.request(SIGTERM);
  auto st = fault_point("remote-syscall");
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().message(), "cancelled by SIGTERM");
  EXPECT_FALSE(check_cancelled().has_value());
  {
    FaultPause pause;  // the cure is never cancelled
    EXPECT_TRUE(check_cancelled().has_value());
  }
}

TEST(FaultScope, NoScopeNoFault) {
  EnvFault env("image-write:1");
  EXPECT_TRUE(fault_point("image-write").has_value());
}

}  // namespace
}  // namespace minicriu
