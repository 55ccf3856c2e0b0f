#include "restorer/rlimit_plan.hpp"

#include <fmt/format.h>

#include <iterator>

namespace minicriu {

namespace {
std::string show(uint64_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }

std::string name(uint32_t resource) {
  static const char* const kNames[] = {"RLIMIT_CPU",    "RLIMIT_FSIZE",   "RLIMIT_DATA",
                                       "RLIMIT_STACK",  "RLIMIT_CORE",    "RLIMIT_RSS",
                                       "RLIMIT_NPROC",  "RLIMIT_NOFILE",  "RLIMIT_MEMLOCK",
                                       "RLIMIT_AS",     "RLIMIT_LOCKS",   "RLIMIT_SIGPENDING",
                                       "RLIMIT_MSGQUEUE", "RLIMIT_NICE",  "RLIMIT_RTPRIO",
                                       "RLIMIT_RTTIME"};
  return resource < std::size(kNames) ? kNames[resource] : "rlimit " + std::to_string(resource);
}
}  // namespace

RlimitPlan plan_rlimits(const google::protobuf::RepeatedPtrField<img::RLimit>& dumped,
                        const std::vector<rlimit>& current, bool can_raise_hard) {
  RlimitPlan plan;
  for (auto& d : dumped) {
    if (d.resource() >= current.size()) continue;
    const rlimit& now = current[d.resource()];
    rst::RLimit l{};
    l.resource = d.resource();
    l.max = d.max();
    // RLIM_INFINITY is the largest value, so plain comparisons order limits.
    if (l.max > now.rlim_max && !can_raise_hard) {
      plan.warnings.push_back(fmt::format(
          "{}: hard limit {} cannot be raised back from {} without CAP_SYS_RESOURCE; "
          "keeping {}", name(d.resource()), show(d.max()), show(now.rlim_max), show(now.rlim_max)));
      l.max = now.rlim_max;
    }
    l.cur = d.cur() <= l.max ? d.cur() : l.max;
    if (l.cur != d.cur())
      plan.warnings.push_back(fmt::format("{}: soft limit {} lowered to {}", name(d.resource()),
                                          show(d.cur()), show(l.cur)));
    plan.limits.push_back(l);
  }
  return plan;
}

}  // namespace minicriu
