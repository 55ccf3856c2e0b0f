#include "proc/sched_attr.hpp"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace minicriu {

namespace {

constexpr uint64_t kFlagResetOnFork = 0x01, kFlagReclaim = 0x02, kFlagDlOverrun = 0x04;
constexpr uint64_t kFlagUtilClampMin = 0x20, kFlagUtilClampMax = 0x40;
constexpr uint32_t kUtilMax = 1024;

}  // namespace

Status dump_sched(pid_t pid, img::ProcessCore& core) {
  for (auto& t : *core.mutable_threads()) {
    rst::SchedAttr a{};
    a.size = sizeof(a);
    if (::syscall(SYS_sched_getattr, static_cast<pid_t>(t.tid()), &a, sizeof(a), 0) != 0)
      return failf_errno("pid {}: thread {}: sched_getattr", pid, t.tid());
    img::SchedAttr* s = t.mutable_sched();
    s->set_policy(a.policy);
    s->set_priority(a.priority);
    s->set_flags(a.flags & (kFlagResetOnFork | kFlagReclaim | kFlagDlOverrun));
    s->set_nice(a.nice);
    s->set_runtime(a.runtime);
    s->set_deadline(a.deadline);
    s->set_period(a.period);
    s->set_util_min(a.util_min);
    s->set_util_max(a.util_max);
  }
  return {};
}

rst::SchedAttr sched_attr_for(const img::ThreadCore& t) {
  rst::SchedAttr a{};
  if (!t.has_sched()) return a;  // an image of before: size 0, the blob leaves it
  const img::SchedAttr& s = t.sched();
  a.size = sizeof(a);
  a.policy = s.policy();
  a.flags = s.flags();
  a.nice = s.nice();
  a.priority = s.priority();
  a.runtime = s.runtime();
  a.deadline = s.deadline();
  a.period = s.period();
  // Clamps only where they were set (a kernel without CONFIG_UCLAMP_TASK
  // reports 0 for both and refuses the flags).
  if (s.util_min() != 0 || (s.util_max() != 0 && s.util_max() != kUtilMax)) {
    a.flags |= kFlagUtilClampMin | kFlagUtilClampMax;
    a.util_min = s.util_min();
    a.util_max = s.util_max();
  }
  return a;
}

}  // namespace minicriu
