#include "fs/ghost_policy.hpp"

#include <fnmatch.h>

#include <cctype>

namespace minicriu {

Result<uint64_t> parse_size(const std::string& text) {
  if (text.empty()) return fail("empty size");
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t next = value * 10 + static_cast<uint64_t>(text[i] - '0');
    if (next / 10 != value) return failf("size {} is too large", text);
    value = next;
    i++;
  }
  if (i == 0) return failf("size '{}' does not start with a number (use e.g. 64M or 2G)", text);
  std::string suffix = text.substr(i);
  int shift = 0;
  if (suffix.empty() || suffix == "B" || suffix == "b") shift = 0;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
  else if (suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
  else if (suffix == "T" || suffix == "t" || suffix == "TiB") shift = 40;
  else return failf("size '{}' has an unknown suffix (use K, M, G or T)", text);
  if (shift && (value >> (64 - shift)) != 0) return failf("size {} is too large", text);
  return value << shift;
}

std::string format_size(uint64_t bytes) {
  static const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0) return fmt::format("{} bytes", bytes);
  if (v == static_cast<double>(static_cast<uint64_t>(v))) return fmt::format("{} {}", static_cast<uint64_t>(v), units[u]);
  return fmt::format("{:.1f} {}", v, units[u]);
}

Result<GhostRule> parse_ghost_rule(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return failf("ghost policy '{}' is not PATTERN:copy or PATTERN:fail", text);
  GhostRule rule;
  rule.pattern = text.substr(0, colon);
  std::string action = text.substr(colon + 1);
  if (action == "copy") rule.action = GhostRule::Action::copy;
  else if (action == "fail") rule.action = GhostRule::Action::fail;
  else return failf("ghost policy '{}': action '{}' is neither copy nor fail", text, action);
  return rule;
}

Result<GhostPolicy> GhostPolicy::from_options(const std::string& limit,
                                              const std::vector<std::string>& rules) {
  uint64_t bytes = kDefaultGhostLimit;
  if (!limit.empty()) {
    ASSIGN_OR_RETURN(bytes, with_context(parse_size(limit), "--ghost-limit"));
  }
  std::vector<GhostRule> parsed;
  for (auto& r : rules) {
    ASSIGN_OR_RETURN(auto rule, with_context(parse_ghost_rule(r), "--ghost-policy"));
    parsed.push_back(std::move(rule));
  }
  return GhostPolicy(bytes, std::move(parsed));
}

Status GhostPolicy::decide(const std::string& path, uint64_t allocated) const {
  for (auto& rule : rules_) {
    if (::fnmatch(rule.pattern.c_str(), path.c_str(), 0) != 0) continue;
    if (rule.action == GhostRule::Action::copy) return {};
    return failf("{} of data, refused by --ghost-policy '{}:fail'", format_size(allocated), rule.pattern);
  }
  if (allocated <= limit_) return {};
  return failf("{} of data, over the ghost file limit of {}; raise it with --ghost-limit SIZE "
               "or let this path through with --ghost-policy 'PATTERN:copy'",
               format_size(allocated), format_size(limit_));
}

}  // namespace minicriu
