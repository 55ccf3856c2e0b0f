#include "restorer/rlimit_plan.hpp"

#include <fmt/format.h>

namespace minicriu {

namespace {
std::string show(uint64_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }
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
          "rlimit {}: hard limit {} cannot be raised back from {} without CAP_SYS_RESOURCE; "
          "keeping {}", d.resource(), show(d.max()), show(now.rlim_max), show(now.rlim_max)));
      l.max = now.rlim_max;
    }
    l.cur = d.cur() <= l.max ? d.cur() : l.max;
    if (l.cur != d.cur())
      plan.warnings.push_back(fmt::format("rlimit {}: soft limit {} lowered to {}", d.resource(),
                                          show(d.cur()), show(l.cur)));
    plan.limits.push_back(l);
  }
  return plan;
}

}  // namespace minicriu
