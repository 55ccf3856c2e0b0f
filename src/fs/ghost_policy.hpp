// What a dump may copy of a ghost file (an open file whose last name was
// removed): a size limit on the allocated data, and rules by path pattern that
// copy or refuse regardless of it. The first matching rule wins; without one,
// the limit decides.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace minicriu {

// Lets an MPI job's shared-memory pool (tens to hundreds of MiB) through and
// stops a runaway multi-gigabyte file.
inline constexpr uint64_t kDefaultGhostLimit = 1ull << 30;

// "1G", "64M", "512K", "4096": bytes. Suffixes are binary (K = 1024).
[[nodiscard]] Result<uint64_t> parse_size(const std::string& text);
std::string format_size(uint64_t bytes);

struct GhostRule {
  enum class Action { copy, fail };
  std::string pattern;  // fnmatch(3) pattern on the path the file last had
  Action action = Action::copy;
};

// "PATTERN:copy" or "PATTERN:fail" (the pattern may hold ':' itself).
[[nodiscard]] Result<GhostRule> parse_ghost_rule(const std::string& text);

class GhostPolicy {
 public:
  GhostPolicy() = default;
  GhostPolicy(uint64_t limit, std::vector<GhostRule> rules) : limit_(limit), rules_(std::move(rules)) {}
  // From the option strings (--ghost-limit, --ghost-policy); empty limit: default.
  [[nodiscard]] static Result<GhostPolicy> from_options(const std::string& limit,
                                                        const std::vector<std::string>& rules);

  // Ok to copy; else the reason, phrased for the one-line refusal.
  [[nodiscard]] Status decide(const std::string& path, uint64_t allocated) const;
  uint64_t limit() const { return limit_; }

 private:
  uint64_t limit_ = kDefaultGhostLimit;
  std::vector<GhostRule> rules_;
};

}  // namespace minicriu
