#include "base/fault.hpp"

#include <string.h>

#include <cstdlib>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

namespace minicriu {

namespace {

thread_local FaultScope* current_scope = nullptr;

}  // namespace

namespace {

// A decimal number, or nothing.
std::optional<uint64_t> parse_count(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9' || n > (UINT64_MAX - 9) / 10) return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

}  // namespace

FaultPlan FaultPlan::parse(std::string_view spec) {
  FaultPlan plan;
  if (spec == "count") {
    plan.counting_ = true;
    return plan;
  }
  constexpr std::string_view stall = ":stall";
  if (spec.ends_with(stall)) {
    plan = parse(spec.substr(0, spec.size() - stall.size()));
    plan.stall_ = plan.n_ > 0;
    return plan;
  }
  constexpr std::string_view delay = ":delay=";
  if (auto at = spec.rfind(delay); at != std::string_view::npos) {
    auto ms = parse_count(spec.substr(at + delay.size()));
    if (!ms || *ms == 0) return plan;
    plan = parse(spec.substr(0, at));
    if (plan.n_ > 0 && !plan.stall_) plan.delay_ms_ = *ms;
    else plan = FaultPlan{};
    return plan;
  }
  auto colon = spec.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return plan;
  auto n = parse_count(spec.substr(colon + 1));
  if (!n || *n == 0) return plan;
  plan.step_ = spec.substr(0, colon);
  plan.n_ = *n;
  return plan;
}

FaultPlan FaultPlan::from_environment() {
  const char* spec = std::getenv("MINICRIU_FAULT");
  return spec ? parse(spec) : FaultPlan{};
}

Result<bool> FaultPlan::hit(std::string_view step, const Logger& log) {
  if (!counting_ && step != step_) return false;
  auto it = seen_.find(step);
  if (it == seen_.end()) it = seen_.emplace(std::string(step), 0).first;
  uint64_t n = ++it->second;
  if (counting_) {
    log.info("fault step {}:{}", step, n);
    return false;
  }
  if (n != n_) return false;
  if (stall_) {
    log.info("fault injected: step {}:{} stalls until cancelled", step, n);
    return true;
  }
  if (delay_ms_) {
    log.info("fault injected: step {}:{} waits {} ms", step, n, delay_ms_);
    return true;
  }
  return failf("fault injected at step {}:{} (MINICRIU_FAULT)", step, n);
}

FaultScope::FaultScope(const Logger& log, const Cancel* cancel)
    : plan_(FaultPlan::from_environment()), log_(log), cancel_(cancel), outer_(current_scope) {
  current_scope = plan_.active() || cancel_ ? this : nullptr;
}

FaultScope::~FaultScope() { current_scope = outer_; }

FaultPause::FaultPause() : paused_(current_scope) { current_scope = nullptr; }

FaultPause::~FaultPause() { current_scope = paused_; }

Status check_cancelled() {
  FaultScope* s = current_scope;
  if (!s || !s->cancel_ || !s->cancel_->requested()) return {};
  int sig = s->cancel_->signal();
  if (sig <= 0) return fail("cancelled");
  const char* name = ::sigabbrev_np(sig);
  return failf("cancelled by SIG{}", name ? name : std::to_string(sig));
}

Status fault_point(std::string_view step) {
  FaultScope* s = current_scope;
  if (!s) return {};
  TRY(check_cancelled());
  if (!s->plan_.active()) return {};
  ASSIGN_OR_RETURN(bool stall, s->plan_.hit(step, s->log_));
  if (!stall) return {};
  bool delay = !s->plan_.stall();
  auto until = std::chrono::steady_clock::now() +
               (delay ? std::chrono::milliseconds(s->plan_.delay_ms()) : std::chrono::milliseconds(60000));
  while (std::chrono::steady_clock::now() < until) {
    TRY(check_cancelled());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (delay) return {};
  return failf("step {} stalled for 60 s and was not cancelled (MINICRIU_FAULT)", step);
}

Status fault_point(std::string_view phase, std::string_view kind) {
  FaultScope* s = current_scope;
  if (!s) return {};
  if (!s->plan_.active()) return check_cancelled();
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
