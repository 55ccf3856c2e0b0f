// What a target held before its parasite came: the fd numbers of its table,
// its mappings and the signals pending on the thread the parasite runs on.
// Comparing it with the same view taken at cure time tells what the dump left
// in the target, however far the dump got: the parasite's memfd (if infect()
// stopped halfway), its socket and the page pipe it received (a parasite that
// stopped answering never closes them), its mapping, a SIGPIPE raised by a
// write of ours. The cure takes exactly that away, and nothing else.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/remote_ptr.hpp"
#include "proc/proc_parse.hpp"
#include "ptrace/tracee.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

// The name of the parasite's memfd; its mapping shows in /proc/PID/maps as
// "/memfd:minicriu-parasite (deleted)".
inline constexpr char kParasiteMemfdName[] = "minicriu-parasite";

struct TargetSnapshot {
  std::set<int> fds;                   // /proc/PID/fd
  std::vector<proc::MapsEntry> maps;   // /proc/PID/maps
  uint64_t pending = 0;                // SigPnd of the thread: bit signo-1

  // Of process pid, with the private pending signals of its thread tid.
  [[nodiscard]] static Result<TargetSnapshot> take(pid_t pid, pid_t tid);
};

struct Leftovers {
  std::vector<int> fds;                // in the table now, not before
  std::vector<RemoteRange> mappings;   // of the parasite's memfd, not there before
  bool sigpipe = false;                // SIGPIPE pending now, not before

  bool empty() const { return fds.empty() && mappings.empty() && !sigpipe; }
  // For the log: "fds 5 6, mappings 0x7f..-0x7f.., SIGPIPE".
  std::string describe() const;
};

// What `now` holds that `before` did not, of what a dump can leave. A mapping
// that is not the parasite's is never a leftover: the target is frozen, but
// its mappings are its own business.
Leftovers find_leftovers(const TargetSnapshot& before, const TargetSnapshot& now);

// Takes left away with remote syscalls in the seized, stopped thread (the
// leader), "syscall" written at site for the time: closes the fds, unmaps
// the mappings, dequeues the SIGPIPE. The first failure, after trying all.
// (The cure, and the guardian of a dumper that died.)
[[nodiscard]] Status take_leftovers_away(Tracee& thread, const TraceeMemory& memory, RemotePtr<> site,
                                         const Leftovers& left);

}  // namespace minicriu
