#include "base/fault.hpp"

#include <cstdlib>

namespace minicriu {

namespace {

thread_local FaultScope* current_scope = nullptr;

}  // namespace

FaultPlan FaultPlan::parse(std::string_view spec) {
  FaultPlan plan;
  if (spec == "count") {
    plan.counting_ = true;
    return plan;
  }
  auto colon = spec.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return plan;
  uint64_t n = 0;
  for (char c : spec.substr(colon + 1)) {
    if (c < '0' || c > '9' || n > (UINT64_MAX - 9) / 10) return plan;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (n == 0) return plan;
  plan.step_ = spec.substr(0, colon);
  plan.n_ = n;
  return plan;
}

FaultPlan FaultPlan::from_environment() {
  const char* spec = std::getenv("MINICRIU_FAULT");
  return spec ? parse(spec) : FaultPlan{};
}

Status FaultPlan::hit(std::string_view step, const Logger& log) {
  if (!counting_ && step != step_) return {};
  auto it = seen_.find(step);
  if (it == seen_.end()) it = seen_.emplace(std::string(step), 0).first;
  uint64_t n = ++it->second;
  if (counting_) {
    log.info("fault step {}:{}", step, n);
    return {};
  }
  if (n != n_) return {};
  return failf("fault injected at step {}:{} (MINICRIU_FAULT)", step, n);
}

FaultScope::FaultScope(const Logger& log) : plan_(FaultPlan::from_environment()), log_(log), outer_(current_scope) {
  current_scope = plan_.active() ? this : nullptr;
}

FaultScope::~FaultScope() { current_scope = outer_; }

FaultPause::FaultPause() : paused_(current_scope) { current_scope = nullptr; }

FaultPause::~FaultPause() { current_scope = paused_; }

Status fault_point(std::string_view step) {
  FaultScope* s = current_scope;
  if (!s) return {};
  return s->plan_.hit(step, s->log_);
}

Status fault_point(std::string_view phase, std::string_view kind) {
  if (!current_scope) return {};
  return fault_point(fault_step_name(phase, kind));
}

std::string fault_step_name(std::string_view phase, std::string_view kind) {
  std::string s(phase);
  s += '/';
  // Lower case, a dash for anything else: "signal-driven I/O owner" ->
  // "signal-driven-i-o-owner".
  for (char c : kind) {
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c >= 'A' && c <= 'Z') s += static_cast<char>(c - 'A' + 'a');
    else if (alnum || c == '_') s += c;
    else if (s.back() != '-') s += '-';
  }
  return s;
}

}  // namespace minicriu
