#include "parasite/target_snapshot.hpp"

#include "ptrace/remote_syscalls.hpp"

#include <signal.h>
#include <sys/syscall.h>

#include <cstddef>

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

Status take_leftovers_away(Tracee& thread, const TraceeMemory& memory, RemotePtr<> site, const Leftovers& left) {
  struct Sigwait {
    uint64_t set;
    int64_t tv_sec, tv_nsec;  // a zero timeout: never sleeps
  };
  auto failed = [](long r) { return r < 0 && r > -4096; };
  RemoteSyscalls rs(thread, memory, site, sizeof(Sigwait));
  TRY(rs.enter());
  Status result;
  auto note = [&](long r, std::string what) {
    if (failed(r) && result) result = std::unexpected(Error(std::move(what), static_cast<int>(-r)));
  };
  for (int fd : left.fds) {
    ASSIGN_OR_RETURN(long r, rs.syscall(SYS_close, fd));
    note(r, fmt::format("close of fd {}", fd));
  }
  for (auto& m : left.mappings) {
    ASSIGN_OR_RETURN(long r, rs.syscall(SYS_munmap, m.start, static_cast<long>(m.size)));
    note(r, fmt::format("munmap of {}-{}", m.start, m.end()));
  }
  if (left.sigpipe) {
    // Our write raised it while every signal was blocked; once the mask is
    // back it would kill the target. rt_sigtimedwait dequeues a pending
    // signal whether it is blocked or not.
    Sigwait w{signal_bit(SIGPIPE), 0, 0};
    TRY(rs.write_scratch(&w, sizeof(w)));
    ASSIGN_OR_RETURN(long r, rs.syscall(SYS_rt_sigtimedwait, rs.scratch(), 0,
                                        rs.scratch().byte_offset(offsetof(Sigwait, tv_sec)), 8));
    note(r, "rt_sigtimedwait for the SIGPIPE we raised");
  }
  TRY(rs.leave());
  return result;
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
