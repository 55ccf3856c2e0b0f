#include "parasite/target_snapshot.hpp"

#include <signal.h>

#include <algorithm>
#include <cstdlib>

namespace minicriu {

namespace {

bool is_parasite_mapping(const proc::MapsEntry& m) {
  return m.path.starts_with(std::string("/memfd:") + kParasiteMemfdName);
}

bool same_mapping(const proc::MapsEntry& a, const proc::MapsEntry& b) {
  return a.start == b.start && a.end == b.end && a.path == b.path;
}

constexpr uint64_t signal_bit(int signo) { return 1ull << (signo - 1); }

}  // namespace

Result<TargetSnapshot> TargetSnapshot::take(pid_t pid, pid_t tid) {
  TargetSnapshot s;
  ASSIGN_OR_RETURN(auto fds, proc::list_numeric_dir(proc::pid_path(pid, "fd")));
  s.fds.insert(fds.begin(), fds.end());
  ASSIGN_OR_RETURN(auto maps_text, proc::read_file(proc::pid_path(pid, "maps")));
  ASSIGN_OR_RETURN(s.maps, proc::parse_maps(maps_text));
  ASSIGN_OR_RETURN(auto status, proc::read_file(proc::pid_path(pid, fmt::format("task/{}/status", tid))));
  auto pending = proc::status_field(status, "SigPnd");
  if (!pending) return failf("thread {}: no SigPnd in its status", tid);
  s.pending = std::strtoull(pending->c_str(), nullptr, 16);
  return s;
}

Leftovers find_leftovers(const TargetSnapshot& before, const TargetSnapshot& now) {
  Leftovers l;
  for (int fd : now.fds)
    if (!before.fds.count(fd)) l.fds.push_back(fd);
  for (auto& m : now.maps) {
    if (!is_parasite_mapping(m)) continue;
    bool old = std::any_of(before.maps.begin(), before.maps.end(),
                           [&](const proc::MapsEntry& b) { return same_mapping(b, m); });
    if (!old) l.mappings.push_back({RemotePtr<>(m.start), m.end - m.start});
  }
  // Non-realtime signals do not queue: a bit set before means the target's own.
  l.sigpipe = (now.pending & signal_bit(SIGPIPE)) && !(before.pending & signal_bit(SIGPIPE));
  return l;
}

std::string Leftovers::describe() const {
  std::string out;
  if (!fds.empty()) {
    out += "fds";
    for (int fd : fds) out += fmt::format(" {}", fd);
  }
  if (!mappings.empty()) {
    out += out.empty() ? "mappings" : ", mappings";
    for (auto& m : mappings) out += fmt::format(" {}-{}", m.start, m.end());
  }
  if (sigpipe) out += out.empty() ? "SIGPIPE" : ", SIGPIPE";
  return out.empty() ? "nothing" : out;
}

}  // namespace minicriu
